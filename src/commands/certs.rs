//! `vmruntime-gate certs`: writes a CA and a serving certificate and prints the caBundle.

use crate::certs;
use crate::cli::CertsArgs;

pub fn run(args: &CertsArgs) -> anyhow::Result<()> {
    let bundle = certs::generate(&args.dns_names, &args.ips)?;
    certs::write(&args.out, &bundle, args.overwrite)?;
    eprintln!(
        "wrote {dir}/{ca}, {dir}/{cert} and {dir}/{key}; the caBundle follows",
        dir = args.out.display(),
        ca = certs::CA_FILE,
        cert = certs::CERT_FILE,
        key = certs::KEY_FILE
    );
    println!("{}", bundle.ca_bundle());
    Ok(())
}
