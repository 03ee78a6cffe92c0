/** An error whose message is meant for the user as it is: the CLI prints it as one line and exits non-zero. */
export class WeftError extends Error {
  constructor(message: string, readonly code = 'EWEFT') {
    super(message);
    this.name = 'WeftError';
  }
}

/** The user's input is wrong (an unknown name, options that do not go together): the CLI exits with status 2. */
export class UsageError extends WeftError {
  readonly exitCode = 2;
  constructor(message: string) {
    super(message, 'EUSAGE');
    this.name = 'UsageError';
  }
}
