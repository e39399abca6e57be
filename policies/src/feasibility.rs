//! Whether a request could ever run on the nodes the cluster has, free or not.

use std::collections::BTreeSet;

use gantry_model::{Resources, Shape};

use crate::view::NodeView;

/// `Some(reason)` when no combination of the given nodes could ever run `shape`, judged by
/// capacity (not by what is free now). With no nodes known yet nothing can be judged, so
/// `None`.
pub fn never_fits(nodes: &[NodeView], shape: &Shape) -> Option<String> {
    if nodes.is_empty() {
        return None;
    }
    let admitted: Vec<&NodeView> = nodes
        .iter()
        .filter(|n| shape.admits(&n.pool, &n.labels))
        .collect();
    if admitted.is_empty() {
        return Some(no_node_admits(nodes, shape));
    }
    let why = never_fits_on(&admitted, shape)?;
    Some(if admitted.len() < nodes.len() {
        format!("{why} (among the nodes of {})", shape.nodes_text())
    } else {
        why
    })
}

/// Why no node is of the pool and labels `shape` asks for.
fn no_node_admits(nodes: &[NodeView], shape: &Shape) -> String {
    let listed = |names: BTreeSet<&str>| {
        let names: Vec<&str> = names.into_iter().collect();
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    };
    if let Some(pool) = &shape.pool
        && !nodes.iter().any(|n| &n.pool == pool)
    {
        let pools = nodes.iter().map(|n| n.pool.as_str()).collect();
        return format!(
            "asks for pool {pool}; no node is in it (pools: {})",
            listed(pools)
        );
    }
    let in_pool = |n: &&NodeView| shape.pool.as_ref().is_none_or(|p| &n.pool == p);
    let labels = nodes
        .iter()
        .filter(in_pool)
        .flat_map(|n| n.labels.iter().map(String::as_str))
        .collect();
    format!(
        "asks for nodes with {}; none has them (labels there: {})",
        shape.nodes_text(),
        listed(labels)
    )
}

fn never_fits_on(nodes: &[&NodeView], shape: &Shape) -> Option<String> {
    let per_node = &shape.per_node;
    let usable_gpus = |n: &NodeView| u64::from(usable(n, shape));
    if let Some(model) = &shape.gpu_model
        && per_node.gpus > 0
        && nodes.iter().all(|n| usable_gpus(n) == 0)
    {
        let models: BTreeSet<&str> = nodes
            .iter()
            .flat_map(|n| n.gpus.iter().map(|g| g.model.as_str()))
            .collect();
        let models: Vec<&str> = models.into_iter().collect();
        return Some(if models.is_empty() {
            format!("asks for {model} GPUs; no node has GPUs")
        } else {
            format!(
                "asks for {model} GPUs; no node has any (models here: {})",
                models.join(", ")
            )
        });
    }
    let largest = |f: &dyn Fn(&NodeView) -> u64| nodes.iter().map(|n| f(n)).max().unwrap_or(0);
    let gpu_what = match &shape.gpu_model {
        Some(model) => format!("{model} GPUs"),
        None => "GPUs".to_string(),
    };
    let dims = [
        (gpu_what, u64::from(per_node.gpus), largest(&usable_gpus)),
        (
            "CPUs".to_string(),
            u64::from(per_node.cpus),
            largest(&|n| u64::from(n.capacity.cpus)),
        ),
        (
            "MiB of memory".to_string(),
            per_node.mem_mib,
            largest(&|n| n.capacity.mem_mib),
        ),
    ];
    for (what, asked, largest) in dims {
        if asked > largest {
            return Some(format!(
                "asks {asked} {what} per node; the largest node has {largest}"
            ));
        }
    }
    let fitting = nodes.iter().filter(|n| fits_capacity(n, shape)).count();
    if u64::from(shape.num_nodes) > fitting as u64 {
        return Some(format!(
            "asks {} nodes with {} GPUs, {} CPUs and {} MiB each; only {fitting} node(s) are that large",
            shape.num_nodes,
            shape.gpus_text(),
            per_node.cpus,
            per_node.mem_mib
        ));
    }
    None
}

/// How many of `node`'s GPUs `shape` may use.
fn usable(node: &NodeView, shape: &Shape) -> u32 {
    match shape.gpu_model {
        None => node.capacity.gpus,
        Some(_) => {
            let matching = node.gpus.iter().filter(|g| shape.takes(g)).count();
            u32::try_from(matching)
                .unwrap_or(u32::MAX)
                .min(node.capacity.gpus)
        }
    }
}

/// Whether `shape` may use `node` (its pool and labels) and it, empty, could hold one part.
pub(crate) fn could_hold_part(node: &NodeView, shape: &Shape) -> bool {
    shape.admits(&node.pool, &node.labels) && fits_capacity(node, shape)
}

/// Whether `node`, empty, could hold one part of `shape`.
fn fits_capacity(node: &NodeView, shape: &Shape) -> bool {
    let capacity = Resources {
        gpus: usable(node, shape),
        ..node.capacity
    };
    shape.per_node.fits_in(&capacity)
}

/// Like [`never_fits`] for a job that may run in any of `shapes`: `Some` (the first shape's
/// reason) only when none of them could ever run.
pub fn none_fits(nodes: &[NodeView], shapes: &[Shape]) -> Option<String> {
    let mut first = None;
    for shape in shapes {
        match never_fits(nodes, shape) {
            None => return None,
            Some(why) => {
                first.get_or_insert(why);
            }
        }
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_model::Gpu;

    fn node(model: &str, gpus: u32, cpus: u32) -> NodeView {
        let capacity = Resources {
            gpus,
            cpus,
            mem_mib: 1024,
        };
        NodeView {
            name: "n".into(),
            schedulable: true,
            unavailable_reason: None,
            gpus: (0..gpus)
                .map(|index| Gpu {
                    index,
                    model: model.into(),
                    memory_mib: 0,
                    nvlink_group: 0,
                    numa_node: None,
                    uuid: String::new(),
                })
                .collect(),
            capacity,
            free: capacity,
            free_gpus: (0..gpus).collect(),
            pool: "default".into(),
            labels: vec![],
        }
    }

    fn ask(num_nodes: u32, gpus: u32, cpus: u32, model: Option<&str>) -> Shape {
        Shape {
            num_nodes,
            per_node: Resources {
                gpus,
                cpus,
                mem_mib: 1,
            },
            gpu_model: model.map(str::to_string),
            time_limit_ms: None,
            pool: None,
            labels: vec![],
        }
    }

    #[test]
    fn says_which_resource_is_too_large() {
        let nodes = [node("NVIDIA H100", 8, 64), node("NVIDIA A100", 4, 64)];
        assert_eq!(
            never_fits(&nodes, &ask(1, 16, 1, None)).as_deref(),
            Some("asks 16 GPUs per node; the largest node has 8")
        );
        assert_eq!(
            never_fits(&nodes, &ask(1, 1, 65, None)).as_deref(),
            Some("asks 65 CPUs per node; the largest node has 64")
        );
        assert!(never_fits(&nodes, &ask(2, 8, 1, None)).is_some_and(|m| m.contains("only 1 node")));
        assert_eq!(never_fits(&nodes, &ask(2, 4, 1, None)), None);
        assert_eq!(never_fits(&[], &ask(9, 99, 99, None)), None);
    }

    #[test]
    fn a_gpu_model_counts_only_its_own_gpus() {
        let nodes = [node("NVIDIA H100", 8, 64), node("NVIDIA A100", 4, 64)];
        assert_eq!(never_fits(&nodes, &ask(1, 4, 1, Some("a100"))), None);
        assert_eq!(
            never_fits(&nodes, &ask(1, 8, 1, Some("a100"))).as_deref(),
            Some("asks 8 a100 GPUs per node; the largest node has 4")
        );
        assert_eq!(
            never_fits(&nodes, &ask(2, 4, 1, Some("h100"))).as_deref(),
            Some(
                "asks 2 nodes with 4 × h100 GPUs, 1 CPUs and 1 MiB each; only 1 node(s) are that large"
            )
        );
        assert_eq!(
            never_fits(&nodes, &ask(1, 1, 1, Some("mi300x"))).as_deref(),
            Some("asks for mi300x GPUs; no node has any (models here: NVIDIA A100, NVIDIA H100)")
        );
        // A job of no GPUs runs anywhere, whatever model it names.
        assert_eq!(never_fits(&nodes, &ask(1, 0, 1, Some("mi300x"))), None);
        let shapes = [ask(1, 16, 1, None), ask(1, 4, 1, Some("a100"))];
        assert_eq!(none_fits(&nodes, &shapes), None);
        assert_eq!(
            none_fits(&nodes, &shapes[..1]).as_deref(),
            Some("asks 16 GPUs per node; the largest node has 8")
        );
    }
}
