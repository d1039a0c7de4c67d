//! Command-line interface.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::admission::Endpoint;
use crate::resources::ImageFormat;

/// Admission webhook, preflight controller, node agent and operator commands for the VM runtime.
#[derive(Debug, Parser)]
#[command(name = "vmruntime-gate", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the mutating and validating admission webhook over HTTPS.
    Webhook(WebhookArgs),
    /// Decide one AdmissionReview file offline and print the response the webhook would send.
    Review(ReviewArgs),
    /// Generate a CA and a serving certificate, and print the base64 caBundle.
    Certs(CertsArgs),
    /// Print the CustomResourceDefinitions of the gate's resources as YAML.
    Crds(CrdsArgs),
    /// Run preflight checks and forced disables; replicas elect a leader with a Lease.
    Controller(ControllerArgs),
    /// Check this node's host for VM support and report into preflight checks.
    Agent(AgentArgs),
    /// Enable the VM runtime; with --wait, follow the preflight check until it is ready.
    Enable(EnableArgs),
    /// Disable the VM runtime; VMs block it unless --force deletes them.
    Disable(DisableArgs),
    /// Start a preflight check; with --wait, show progress and the result table.
    Check(CheckArgs),
    /// Show the runtime's state, the latest preflight check and the VM count.
    Status(StatusArgs),
    /// Print a shell completion script, such as `vmruntime-gate completion bash > /etc/bash_completion.d/vmruntime-gate`.
    Completion(CompletionArgs),
}

#[derive(Debug, Args)]
pub struct WebhookArgs {
    /// Run locally: create certificates in certs/ when missing, serve on 127.0.0.1:8443 with
    /// health on 127.0.0.1:8080, and read the cluster state from manifests/examples/cluster.
    #[arg(long)]
    pub dev: bool,
    /// IP:PORT of the HTTPS admission endpoints [default: 0.0.0.0:8443, or 127.0.0.1:8443 with --dev].
    #[arg(long, value_name = "ADDR", value_parser = parse_socket_address)]
    pub listen: Option<SocketAddr>,
    /// IP:PORT of the plain-HTTP /healthz and /readyz endpoints [default: 0.0.0.0:8080, or 127.0.0.1:8080 with --dev].
    #[arg(long, value_name = "ADDR", value_parser = parse_socket_address)]
    pub health_listen: Option<SocketAddr>,
    /// PEM certificate chain served to clients (leaf first).
    #[arg(long, value_name = "FILE", required_unless_present = "dev")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of the serving certificate.
    #[arg(long, value_name = "FILE", required_unless_present = "dev")]
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA that client certificates must be signed by; without it, no client certificate is requested.
    #[arg(long, value_name = "FILE")]
    pub client_ca_file: Option<PathBuf>,
    /// How often the certificate and key files are checked for new content, such as 2s.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub certificate_poll_interval: Duration,
    /// Read the cluster state from YAML or JSON files in DIR instead of watching the API server.
    #[arg(long, value_name = "DIR")]
    pub cluster_state: Option<PathBuf>,
    #[command(flatten)]
    pub decision: DecisionArgs,
    /// Largest accepted request body in bytes, optionally with a KiB or MiB suffix; larger bodies get HTTP 413.
    #[arg(long, value_name = "BYTES", default_value = "8MiB", value_parser = parse_byte_size)]
    pub max_body_bytes: usize,
    /// Maximum wait for requests in flight after SIGTERM, such as 30s or 500ms.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Settings shared by the webhook and the offline review.
#[derive(Debug, Args)]
pub struct DecisionArgs {
    /// Value the mutating webhook writes to a missing spec.vmImageFormat.
    #[arg(long, value_name = "FORMAT", default_value = "raw", value_parser = parse_image_format)]
    pub default_image_format: ImageFormat,
}

#[derive(Debug, Args)]
pub struct ReviewArgs {
    /// Endpoint whose decision to compute.
    #[arg(long, value_enum, default_value_t = Endpoint::Validate)]
    pub endpoint: Endpoint,
    /// YAML or JSON files (or a folder of them) with the cluster state to decide against.
    #[arg(long, value_name = "DIR")]
    pub cluster_state: PathBuf,
    #[command(flatten)]
    pub decision: DecisionArgs,
    /// AdmissionReview JSON file, or - for standard input.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Time each node's agent has to report, counted from the start of a check, such as 120s.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = parse_duration)]
    pub node_timeout: Duration,
    /// Lease duration: another replica takes over at most this long after the leader stops, such as 15s.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// Identity of this replica in the Lease and in Events [default: POD_NAME, or the host name and process id].
    #[arg(long, value_name = "NAME", env = "POD_NAME")]
    pub identity: Option<String>,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Name of the Node this agent checks.
    #[arg(long, value_name = "NAME", env = "NODE_NAME")]
    pub node_name: String,
    /// Folder where the host's / is mounted (read-only in the DaemonSet).
    #[arg(long, value_name = "DIR", default_value = "/mnt")]
    pub host_root: PathBuf,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Cluster connection settings of the operator commands.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Kubeconfig file [default: KUBECONFIG, then ~/.kube/config, then the in-cluster settings].
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EnableArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Follow the preflight check that enabling starts until the runtime is ready or the check failed.
    #[arg(long)]
    pub wait: bool,
    /// Maximum wait with --wait, such as 10m.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct DisableArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Delete every VM and its disks with the runtime (sets the force-disable annotation to "true").
    #[arg(long)]
    pub force: bool,
    /// Confirm the deletion without a prompt when the force-disable annotation is already "true".
    #[arg(long)]
    pub yes: bool,
    /// Follow the deletion until every VM is gone.
    #[arg(long)]
    pub wait: bool,
    /// Maximum wait with --wait, such as 10m.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Show progress until the check completes, then the result table; exit status 1 when it failed.
    #[arg(long)]
    pub wait: bool,
    /// Maximum wait with --wait, such as 10m.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// Shell to generate the completion script for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct CrdsArgs {
    /// Print the VM runtime's own VirtualMachine and VirtualMachineDisk CRDs instead, for test
    /// clusters that have no VM runtime installed.
    #[arg(long)]
    pub vm_runtime_kinds: bool,
}

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Folder for ca.crt, tls.crt and tls.key; created when missing.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// DNS name for the serving certificate, such as vmruntime-gate.vm-system.svc; repeatable.
    #[arg(long = "dns-name", value_name = "NAME", num_args = 1..)]
    pub dns_names: Vec<String>,
    /// IP address for the serving certificate; repeatable.
    #[arg(long = "ip", value_name = "ADDR", num_args = 1..)]
    pub ips: Vec<IpAddr>,
    /// Replace existing files in --out. Clusters that trust the old CA must get the new caBundle.
    #[arg(long)]
    pub overwrite: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn parse_image_format(value: &str) -> Result<ImageFormat, String> {
    value.parse()
}

fn parse_socket_address(value: &str) -> Result<SocketAddr, String> {
    value.parse().map_err(|_| {
        format!("invalid address {value:?}: use IP:PORT, such as 127.0.0.1:8443, 0.0.0.0:8443 or [::]:8443")
    })
}

/// Parses a byte count, optionally with a `KiB` or `MiB` suffix.
pub fn parse_byte_size(value: &str) -> Result<usize, String> {
    let invalid = || format!("invalid size {value:?}: use a number of bytes, such as 8388608, 512KiB or 8MiB");
    let (number, unit) = match value.find(|c: char| !c.is_ascii_digit()) {
        Some(split) => value.split_at(split),
        None => (value, ""),
    };
    let number: usize = number.parse().map_err(|_| invalid())?;
    let factor = match unit {
        "" => 1,
        "KiB" => 1024,
        "MiB" => 1024 * 1024,
        _ => return Err(invalid()),
    };
    number.checked_mul(factor).filter(|bytes| *bytes > 0).ok_or_else(invalid)
}

/// Parses a duration with a unit: `ms`, `s`, `m` or `h`.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {value:?}: use a number with a unit, such as 500ms, 30s, 2m or 1h");
    let split = value.find(|c: char| !c.is_ascii_digit()).ok_or_else(invalid)?;
    let (number, unit) = value.split_at(split);
    let number: u64 = number.parse().map_err(|_| invalid())?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        "h" => Ok(Duration::from_secs(number * 3600)),
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("3d").is_err());
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_byte_size("8388608"), Ok(8_388_608));
        assert_eq!(parse_byte_size("512KiB"), Ok(524_288));
        assert_eq!(parse_byte_size("8MiB"), Ok(8_388_608));
        assert!(parse_byte_size("8MB").is_err());
        assert!(parse_byte_size("0").is_err());
        assert!(parse_byte_size("MiB").is_err());
    }

    #[test]
    fn socket_address_error_shows_form() {
        let error = parse_socket_address("localhost:9501").unwrap_err();
        assert!(error.contains("\"localhost:9501\""), "{error}");
        assert!(error.contains("IP:PORT"), "{error}");
    }

    #[test]
    fn cli_definition_valid() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
