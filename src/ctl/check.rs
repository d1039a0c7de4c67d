//! `vmruntime-gate check`: starts a preflight check and, with `--wait`, follows it.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use kube::Client;
use kube::api::{Api, PostParams};

use super::{CtlError, CtlResult, POLL, api_error, connect};
use crate::cli::CheckArgs;
use crate::preflight::CHECK_NAME_PREFIX;
use crate::resources::{SYSTEM_NAMESPACE, VMRuntimePreflightCheck, VMRuntimePreflightCheckSpec};

pub async fn run(args: &CheckArgs) -> CtlResult<()> {
    let client = connect(args.cluster.kubeconfig.as_deref()).await?;
    let name = create(&client).await?;
    println!("Created preflight check {name} in namespace {SYSTEM_NAMESPACE}.");
    if !args.wait {
        println!("Follow it with: kubectl get vmruntimepfc -n {SYSTEM_NAMESPACE} {name}");
        return Ok(());
    }
    let check = follow(&client, &name, args.timeout).await?;
    report(&check)
}

/// Creates `vmruntime-preflight-check-<uuid>` in `vm-system` and returns its name.
pub async fn create(client: &Client) -> CtlResult<String> {
    let name = format!("{CHECK_NAME_PREFIX}{}", uuid::Uuid::new_v4());
    let mut check = VMRuntimePreflightCheck::new(&name, VMRuntimePreflightCheckSpec {});
    check.metadata.namespace = Some(SYSTEM_NAMESPACE.to_owned());
    Api::<VMRuntimePreflightCheck>::namespaced(client.clone(), SYSTEM_NAMESPACE)
        .create(&PostParams::default(), &check)
        .await
        .map_err(|error| api_error(&format!("create preflight check {name} in {SYSTEM_NAMESPACE}"), error))?;
    Ok(name)
}

/// Waits until check `name` has a result, showing how many eligible nodes have reported.
pub async fn follow(client: &Client, name: &str, timeout: Duration) -> CtlResult<VMRuntimePreflightCheck> {
    let api = Api::<VMRuntimePreflightCheck>::namespaced(client.clone(), SYSTEM_NAMESPACE);
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} nodes reported")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(format!("preflight check {name}"));
    let deadline = Instant::now() + timeout;
    loop {
        let check = api
            .get_opt(name)
            .await
            .map_err(|error| api_error(&format!("read preflight check {name}"), error))?
            .ok_or_else(|| CtlError::failed(format!("preflight check {name} was deleted while it ran")))?;
        let status = check.status.clone().unwrap_or_default();
        let reported = status.eligible_nodes.iter().filter(|node| status.checks.contains_key(*node)).count();
        bar.set_length(status.eligible_nodes.len() as u64);
        bar.set_position(reported as u64);
        bar.tick();
        if status.pass.is_some() {
            bar.finish_and_clear();
            return Ok(check);
        }
        if Instant::now() > deadline {
            bar.abandon();
            let hint = if status.start_time.is_none() {
                "the controller has not started it; check that the vmruntime-gate controller runs (kubectl get pods -n vm-system)"
            } else {
                "some node agents have not reported yet"
            };
            return Err(CtlError::failed(format!(
                "timed out after {} s waiting for preflight check {name}: {hint}",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(super::POLL.min(POLL)).await;
    }
}

/// Prints the result table of a completed check; a failed check is an error.
pub fn report(check: &VMRuntimePreflightCheck) -> CtlResult<()> {
    let name = super::check_name(check);
    let status = check.status.clone().unwrap_or_default();
    let mut rows = vec![["NODE".to_owned(), "CHECK".to_owned(), "PASSED".to_owned(), "MESSAGE".to_owned()]];
    for (node, result) in &status.checks {
        for check in &result.results {
            rows.push([node.clone(), check.check_name.clone(), check.passed.to_string(), check.message.clone()]);
        }
    }
    print!("{}", table(&rows));

    if status.pass == Some(true) {
        println!("Preflight check {name} passed.");
        return Ok(());
    }
    let failing: Vec<String> = super::failing_nodes(check)
        .into_iter()
        .map(|(node, failed)| {
            let checks: Vec<&str> = failed.iter().map(|(check, _)| check.as_str()).collect();
            format!("{node} ({})", checks.join(", "))
        })
        .collect();
    Err(CtlError::failed(if failing.is_empty() {
        format!("preflight check {name} failed: no node was eligible")
    } else {
        format!("preflight check {name} failed on {}", failing.join(", "))
    }))
}

/// Formats rows as left-aligned columns separated by three spaces, like kubectl.
pub fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (index, cell) in row.iter().enumerate() {
            widths[index] = widths[index].max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in rows {
        let mut line = String::new();
        for (index, cell) in row.iter().enumerate() {
            if index + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}   ", width = widths[index]));
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn table_aligns_columns() {
        let rows = [["NODE".to_owned(), "PASSED".to_owned()], ["worker-10".to_owned(), "true".to_owned()]];
        assert_eq!(super::table(&rows), "NODE        PASSED\nworker-10   true\n");
    }
}
