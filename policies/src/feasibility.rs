//! Whether a request could ever run on the nodes the cluster has, free or not.

use gantry_model::Resources;

use crate::view::NodeView;

/// `Some(reason)` when no combination of the given nodes could ever run a job of
/// `num_nodes` × `per_node`, judged by capacity (not by what is free now). With no
/// nodes known yet nothing can be judged, so `None`.
pub fn never_fits(nodes: &[NodeView], num_nodes: u32, per_node: &Resources) -> Option<String> {
    if nodes.is_empty() {
        return None;
    }
    let largest =
        |f: fn(&Resources) -> u64| nodes.iter().map(|n| f(&n.capacity)).max().unwrap_or(0);
    let dims = [
        (
            "GPUs",
            u64::from(per_node.gpus),
            largest(|r| u64::from(r.gpus)),
        ),
        (
            "CPUs",
            u64::from(per_node.cpus),
            largest(|r| u64::from(r.cpus)),
        ),
        ("MiB of memory", per_node.mem_mib, largest(|r| r.mem_mib)),
    ];
    for (what, asked, largest) in dims {
        if asked > largest {
            return Some(format!(
                "asks {asked} {what} per node; the largest node has {largest}"
            ));
        }
    }
    let fitting = nodes
        .iter()
        .filter(|n| per_node.fits_in(&n.capacity))
        .count();
    if u64::from(num_nodes) > fitting as u64 {
        return Some(format!(
            "asks {num_nodes} nodes with {} GPUs, {} CPUs and {} MiB each; only {fitting} node(s) are that large",
            per_node.gpus, per_node.cpus, per_node.mem_mib
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(gpus: u32, cpus: u32) -> NodeView {
        let capacity = Resources {
            gpus,
            cpus,
            mem_mib: 1024,
        };
        NodeView {
            name: "n".into(),
            schedulable: true,
            unavailable_reason: None,
            gpus: vec![],
            capacity,
            free: capacity,
            free_gpus: (0..gpus).collect(),
        }
    }

    #[test]
    fn says_which_resource_is_too_large() {
        let nodes = [node(8, 64), node(4, 64)];
        let ask = |gpus, cpus| Resources {
            gpus,
            cpus,
            mem_mib: 1,
        };
        assert_eq!(
            never_fits(&nodes, 1, &ask(16, 1)).as_deref(),
            Some("asks 16 GPUs per node; the largest node has 8")
        );
        assert_eq!(
            never_fits(&nodes, 1, &ask(1, 65)).as_deref(),
            Some("asks 65 CPUs per node; the largest node has 64")
        );
        assert!(never_fits(&nodes, 2, &ask(8, 1)).is_some_and(|m| m.contains("only 1 node")));
        assert_eq!(never_fits(&nodes, 2, &ask(4, 1)), None);
        assert_eq!(never_fits(&[], 9, &ask(99, 99)), None);
    }
}
