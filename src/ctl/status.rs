//! `vmruntime-gate status`: the runtime's state, the latest preflight check and the VM count.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{CtlResult, age, connect, failing_nodes, list_checks, list_vms};
use crate::cli::{OutputFormat, StatusArgs};
use crate::cluster::VmKind;
use crate::resources::vmruntime::FORCE_DISABLE_ANNOTATION;

/// The status as `-o json` prints it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub enabled: bool,
    pub ready: bool,
    pub use_emulation: bool,
    pub vm_image_format: Option<String>,
    pub force_disable: Option<String>,
    pub latest_check: Option<CheckReport>,
    pub vms: VmReport,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    pub name: String,
    /// Absent while the check runs.
    pub passed: Option<bool>,
    pub age: String,
    pub failing_nodes: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VmReport {
    pub total: usize,
    pub running: usize,
    pub by_kind: BTreeMap<String, usize>,
}

pub async fn run(args: &StatusArgs) -> CtlResult<()> {
    let client = connect(args.cluster.kubeconfig.as_deref()).await?;
    let runtime = super::runtime(&client).await?;
    let checks = list_checks(&client).await?;
    let vms = list_vms(&client).await?;

    let latest_check = checks.last().map(|check| CheckReport {
        name: super::check_name(check),
        passed: check.status.as_ref().and_then(|status| status.pass),
        age: age(check.metadata.creation_timestamp.as_ref()),
        failing_nodes: failing_nodes(check).into_iter().map(|(node, _)| node).collect(),
    });
    let mut by_kind: BTreeMap<String, usize> = VmKind::ALL.iter().map(|kind| (kind.to_string(), 0)).collect();
    for vm in &vms {
        *by_kind.entry(vm.kind.to_string()).or_default() += 1;
    }
    let report = Report {
        enabled: runtime.spec.enabled == Some(true),
        ready: runtime.status.as_ref().and_then(|status| status.ready) == Some(true),
        use_emulation: runtime.spec.use_emulation == Some(true),
        vm_image_format: runtime.spec.vm_image_format.map(|format| format.to_string()),
        force_disable: runtime.metadata.annotations.as_ref().and_then(|a| a.get(FORCE_DISABLE_ANNOTATION).cloned()),
        latest_check,
        vms: VmReport { total: vms.len(), running: vms.iter().filter(|vm| vm.is_running()).count(), by_kind },
    };

    match args.output {
        OutputFormat::Json => {
            println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
        }
        OutputFormat::Text => print!("{}", text(&report)),
    }
    Ok(())
}

/// Renders the report for a terminal.
pub fn text(report: &Report) -> String {
    let yes_no = |value: bool| if value { "yes" } else { "no" };
    let check = match &report.latest_check {
        None => "none; start one with `vmruntime-gate check --wait`".to_owned(),
        Some(check) => {
            let result = match check.passed {
                Some(true) => "passed".to_owned(),
                Some(false) if check.failing_nodes.is_empty() => "failed".to_owned(),
                Some(false) => format!("failed on {}", check.failing_nodes.join(", ")),
                None => "running".to_owned(),
            };
            format!("{} ({result}, {} ago)", check.name, check.age)
        }
    };
    let kinds: Vec<String> = report.vms.by_kind.iter().map(|(kind, count)| format!("{kind}: {count}")).collect();
    format!(
        "Enabled:        {}\nReady:          {}\nEmulation:      {}\nImage format:   {}\nForce disable:  {}\n\
         Latest check:   {check}\nVMs:            {} ({} running; {})\n",
        yes_no(report.enabled),
        yes_no(report.ready),
        yes_no(report.use_emulation),
        report.vm_image_format.as_deref().unwrap_or("not set"),
        report.force_disable.as_deref().unwrap_or("not set"),
        report.vms.total,
        report.vms.running,
        kinds.join(", ")
    )
}
