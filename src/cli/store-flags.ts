import type { Command } from 'commander';

/**
 * --etcd-cafile/--etcd-certfile/--etcd-keyfile on a command that takes --store. They set
 * $WEFT_ETCD_CAFILE/CERTFILE/KEYFILE for this process before the action runs, so every store the command
 * opens (also inside the agent) uses them; openStore reads them from there (see src/store/index.ts).
 */
export function addEtcdTlsFlags(cmd: Command): Command {
  return cmd
    .option('--etcd-cafile <file>', 'CA certificate (PEM) to verify etcd with; implies TLS (default $WEFT_ETCD_CAFILE)')
    .option('--etcd-certfile <file>', 'client certificate (PEM) for etcd (default $WEFT_ETCD_CERTFILE)')
    .option('--etcd-keyfile <file>', 'client key (PEM) for etcd (default $WEFT_ETCD_KEYFILE)')
    .hook('preAction', (c) => {
      const o = c.opts<{ etcdCafile?: string; etcdCertfile?: string; etcdKeyfile?: string }>();
      if (o.etcdCafile) process.env.WEFT_ETCD_CAFILE = o.etcdCafile;
      if (o.etcdCertfile) process.env.WEFT_ETCD_CERTFILE = o.etcdCertfile;
      if (o.etcdKeyfile) process.env.WEFT_ETCD_KEYFILE = o.etcdKeyfile;
    });
}
