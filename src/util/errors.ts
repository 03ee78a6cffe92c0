/** An error whose message is meant for the user as it is: the CLI prints it as one line and exits non-zero. */
export class WeftError extends Error {
  constructor(message: string, readonly code = 'EWEFT') {
    super(message);
    this.name = 'WeftError';
  }
}
