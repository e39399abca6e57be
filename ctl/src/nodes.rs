//! `gantry nodes`, `drain` and `resume`.

use anyhow::{Context, bail};
use gantry_model::units::{format_duration_ms, parse_duration_ms};
use gantry_proto as pb;

use crate::client::{Scheduler, caller};
use crate::hostlist;
use crate::output::{Format, NodeRow, emit, emit_json, mem_pair, render_table};

#[derive(clap::Args, Debug, Clone)]
pub struct NodesArgs {
    /// Output format
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Answer from the first replica that responds, from its own copy of the state, even
    /// if it is not the leader (possibly a little behind)
    #[arg(long)]
    pub stale: bool,
    /// Show the nodes as a tree under the switches of the scheduler's topology file
    #[arg(long)]
    pub topology: bool,
    #[command(subcommand)]
    pub action: Option<NodesAction>,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum NodesAction {
    /// Let another machine take a node's name over (admins): the next node daemon to register
    /// under it claims it. Stop the old machine's daemon first
    Replace {
        #[arg(value_name = "NODE")]
        node: String,
    },
}

#[derive(clap::Args, Debug, Clone)]
#[command(group = clap::ArgGroup::new("mode").args(["wait", "requeue", "deadline"]))]
pub struct DrainArgs {
    /// Node names: gpu01, gpu01,gpu02, gpu[01-16]
    #[arg(required = true, value_name = "NODE")]
    pub nodes: Vec<String>,
    /// Why the node is drained (shown by `gantry nodes`); required, as in scontrol
    #[arg(long, required = true, value_name = "TEXT")]
    pub reason: String,
    /// Let the jobs running there finish (the default)
    #[arg(long)]
    pub wait: bool,
    /// Stop the jobs running there at once (warned first, with a checkpoint contract) and
    /// requeue them to run elsewhere
    #[arg(long)]
    pub requeue: bool,
    /// Let the jobs running there go on this long (e.g. 2h), then requeue those left
    #[arg(long, value_name = "DUR")]
    pub deadline: Option<String>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ResumeArgs {
    /// Node names: gpu01, gpu01,gpu02, gpu[01-16]
    #[arg(required = true, value_name = "NODE")]
    pub nodes: Vec<String>,
}

pub async fn nodes(args: NodesArgs, scheduler: &mut Scheduler) -> anyhow::Result<()> {
    if let Some(NodesAction::Replace { node }) = args.action {
        return replace(node, scheduler).await;
    }
    let request = pb::ListNodesRequest { stale: args.stale };
    let response = scheduler
        .call(|mut client| async move { client.list_nodes(request).await })
        .await?;
    match args.format {
        Format::Json => {
            let rows: Vec<NodeRow> = response.nodes.iter().map(NodeRow::from).collect();
            emit_json(&rows)?;
        }
        Format::Table if args.topology => emit(&topology_tree(&response.nodes))?,
        Format::Table => emit(&nodes_table(&response.nodes))?,
    }
    Ok(())
}

/// The nodes under their switches, top switch first, one level of indent per level:
/// `spine` / `  leaf-a` / `    gpu01  MIXED  GPUs 2/8`. Nodes the topology file does not name
/// come last, under `(no switch)`.
pub fn topology_tree(nodes: &[pb::Node]) -> String {
    let mut sorted: Vec<(Vec<&str>, &pb::Node)> = nodes
        .iter()
        .map(|n| (n.switches.iter().rev().map(String::as_str).collect(), n))
        .collect();
    // Nodes without switches last.
    sorted.sort_by(|(a, x), (b, y)| (a.is_empty(), a, &x.name).cmp(&(b.is_empty(), b, &y.name)));
    let mut out = String::new();
    let mut open: Vec<&str> = Vec::new();
    for (path, node) in &sorted {
        let path: Vec<&str> = if path.is_empty() {
            vec!["(no switch)"]
        } else {
            path.clone()
        };
        let common = open.iter().zip(&path).take_while(|(a, b)| a == b).count();
        for (depth, switch) in path.iter().enumerate().skip(common) {
            out.push_str(&format!("{}{switch}\n", "  ".repeat(depth)));
        }
        open = path.clone();
        let row = NodeRow::from(*node);
        out.push_str(&format!(
            "{}{}  {}  GPUs {}/{}\n",
            "  ".repeat(path.len()),
            row.name,
            row.state,
            row.gpus_allocated,
            row.gpus_total
        ));
    }
    out
}

pub const NODES_HEADER: [&str; 8] = [
    "NAME",
    "STATE",
    "GPUS(alloc/total)",
    "GPU_MODEL",
    "CPUS(alloc/total)",
    "MEM(alloc/total)",
    "POOL",
    "REASON",
];

pub fn nodes_table(nodes: &[pb::Node]) -> String {
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|node| {
            let row = NodeRow::from(node);
            vec![
                row.name,
                row.state,
                format!("{}/{}", row.gpus_allocated, row.gpus_total),
                dash(&row.gpu_model),
                format!("{}/{}", row.cpus_allocated, row.cpus),
                mem_pair(row.mem_allocated, row.mem),
                dash(&row.pool),
                row.reason,
            ]
        })
        .collect();
    render_table(&NODES_HEADER, &rows)
}

pub async fn drain(args: DrainArgs, scheduler: &mut Scheduler) -> anyhow::Result<()> {
    let reason = args.reason.trim().to_string();
    if reason.is_empty() {
        bail!("--reason must say why the nodes are drained");
    }
    let nodes = node_names(args.nodes)?;
    let (mode, deadline_after_ms, then) = match &args.deadline {
        Some(text) => {
            let after = parse_duration_ms(text)
                .ok()
                .filter(|ms| *ms > 0)
                .with_context(|| {
                    format!(
                        "--deadline: expected a duration longer than 0 such as 2h (got {text:?})"
                    )
                })?;
            let then = format!(
                "running jobs may go on for {}, then are requeued",
                format_duration_ms(after)
            );
            (pb::DrainMode::Deadline, after, then)
        }
        None if args.requeue => (
            pb::DrainMode::Requeue,
            0,
            "running jobs are stopped and requeued".to_string(),
        ),
        None => (pb::DrainMode::Wait, 0, "running jobs finish".to_string()),
    };
    let request = pb::DrainRequest {
        caller: Some(caller()),
        nodes: nodes.clone(),
        reason,
        mode: mode as i32,
        deadline_after_ms,
    };
    scheduler
        .call(|mut client| {
            let request = request.clone();
            async move { client.drain(request).await }
        })
        .await?;
    let text: String = nodes
        .iter()
        .map(|n| format!("Draining {n}: no new jobs start there; {then}\n"))
        .collect();
    emit(&text)?;
    Ok(())
}

pub async fn resume(args: ResumeArgs, scheduler: &mut Scheduler) -> anyhow::Result<()> {
    let nodes = node_names(args.nodes)?;
    let request = pb::ResumeRequest {
        caller: Some(caller()),
        nodes: nodes.clone(),
    };
    scheduler
        .call(|mut client| {
            let request = request.clone();
            async move { client.resume(request).await }
        })
        .await?;
    let text: String = nodes.iter().map(|n| format!("Resumed {n}\n")).collect();
    emit(&text)?;
    Ok(())
}

async fn replace(node: String, scheduler: &mut Scheduler) -> anyhow::Result<()> {
    let request = pb::ReplaceNodeRequest {
        caller: Some(caller()),
        node: node.clone(),
    };
    scheduler
        .call(|mut client| {
            let request = request.clone();
            async move { client.replace_node(request).await }
        })
        .await?;
    emit(&format!(
        "Node {node} may be taken over: the next node daemon to register as {node} claims it\n"
    ))?;
    Ok(())
}

/// Node names as given, accepting `a,b` as well as `a b`, without blanks or repeats.
/// Names as given, comma lists and ranges (`gpu[01-16]`) expanded, repeats dropped.
fn node_names(given: Vec<String>) -> anyhow::Result<Vec<String>> {
    let names = hostlist::expand(&given.join(","))?;
    if names.is_empty() {
        bail!("no node names given");
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_table_shows_allocated_over_total() {
        let node = pb::Node {
            name: "gpu-01".into(),
            state: pb::NodeState::Mixed as i32,
            pool: "default".into(),
            gpus_total: 8,
            gpus_allocated: 2,
            gpu_model: "H100".into(),
            cpus: 64,
            cpus_allocated: 8,
            mem_mib: 512 * 1024,
            mem_allocated_mib: 2048,
            ..Default::default()
        };
        let drained = pb::Node {
            name: "cpu-01".into(),
            state: pb::NodeState::Drained as i32,
            reason: "bad fan".into(),
            cpus: 16,
            mem_mib: 1024,
            ..Default::default()
        };
        assert_eq!(
            nodes_table(&[node, drained]),
            "NAME    STATE    GPUS(alloc/total)  GPU_MODEL  CPUS(alloc/total)  MEM(alloc/total)  POOL     REASON\n\
             gpu-01  MIXED    2/8                H100       8/64               2G/512G           default\n\
             cpu-01  DRAINED  0/0                -          0/16               0M/1G             -        bad fan\n"
        );
    }

    #[test]
    fn the_topology_tree_puts_nodes_under_their_switches() {
        let node = |name: &str, switches: &[&str], used: u32| pb::Node {
            name: name.into(),
            state: pb::NodeState::Idle as i32,
            gpus_total: 8,
            gpus_allocated: used,
            switches: switches.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let nodes = [
            node("gpu03", &["leaf-b", "spine"], 0),
            node("login", &[], 0),
            node("gpu01", &["leaf-a", "spine"], 2),
            node("gpu02", &["leaf-a", "spine"], 0),
        ];
        assert_eq!(
            topology_tree(&nodes),
            "spine\n  leaf-a\n    gpu01  IDLE  GPUs 2/8\n    gpu02  IDLE  GPUs 0/8\n  leaf-b\n    gpu03  IDLE  GPUs 0/8\n(no switch)\n  login  IDLE  GPUs 0/8\n"
        );
    }

    #[test]
    fn node_names_split_commas_expand_ranges_and_drop_repeats() {
        let given = vec![
            "a,b".to_string(),
            " c ".to_string(),
            "a".to_string(),
            ",".to_string(),
            "gpu[1-2]".to_string(),
        ];
        assert_eq!(node_names(given).unwrap(), ["a", "b", "c", "gpu1", "gpu2"]);
        assert!(node_names(vec![",".to_string()]).is_err());
    }
}
