//! The simulated cluster: a shorthand for a uniform one (`32x8:V100`) or a TOML file of
//! pools of identical nodes (see `sim/clusters/`).

use std::path::Path;

use gantry_model::{Gpu, Resources};
use gantry_policies::NodeView;
use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ClusterError {
    #[error("cannot read the cluster file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("cluster file {path}: {why}")]
    File { path: String, why: String },
    #[error("{0:?} is neither a cluster file nor NODESxGPUS[:MODEL] (e.g. 32x8:V100)")]
    Shorthand(String),
}

/// Nodes of one kind.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    #[serde(default = "default_pool")]
    pub name: String,
    pub nodes: u32,
    pub gpus: u32,
    #[serde(default = "default_model")]
    pub model: String,
    /// GPUs per NVLink group (all in one by default).
    pub nvlink_group_size: Option<u32>,
    /// CPUs and memory per node (8 CPUs and 64 GiB per GPU by default).
    pub cpus: Option<u32>,
    pub mem_gib: Option<u64>,
}

fn default_pool() -> String {
    gantry_policies::DEFAULT_POOL.to_string()
}

fn default_model() -> String {
    "GPU".to_string()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    #[serde(rename = "pool")]
    pub pools: Vec<Pool>,
}

/// The largest cluster the simulator builds: beyond it, a typo.
const MAX_NODES: u64 = 100_000;

impl Cluster {
    /// `text` is a path to a TOML file when one exists there, else the shorthand.
    pub fn load(text: &str) -> Result<Cluster, ClusterError> {
        let path = Path::new(text);
        if path.is_file() {
            let body = std::fs::read_to_string(path).map_err(|source| ClusterError::Io {
                path: text.to_string(),
                source,
            })?;
            let file = |why: String| ClusterError::File {
                path: text.to_string(),
                why,
            };
            let cluster: Cluster = toml::from_str(&body).map_err(|e| file(e.to_string()))?;
            cluster.check().map_err(file)?;
            return Ok(cluster);
        }
        Cluster::shorthand(text)
    }

    fn shorthand(text: &str) -> Result<Cluster, ClusterError> {
        let bad = || ClusterError::Shorthand(text.to_string());
        let (size, model) = match text.split_once(':') {
            Some((size, model)) if !model.is_empty() => (size, model.to_string()),
            Some(_) => return Err(bad()),
            None => (text, default_model()),
        };
        let (nodes, gpus) = size.split_once(['x', 'X']).ok_or_else(bad)?;
        let cluster = Cluster {
            pools: vec![Pool {
                name: default_pool(),
                nodes: nodes.trim().parse().map_err(|_| bad())?,
                gpus: gpus.trim().parse().map_err(|_| bad())?,
                model,
                nvlink_group_size: None,
                cpus: None,
                mem_gib: None,
            }],
        };
        cluster.check().map_err(|_| bad())?;
        Ok(cluster)
    }

    fn check(&self) -> Result<(), String> {
        if self.pools.is_empty() {
            return Err("it names no pool".into());
        }
        let total: u64 = self.pools.iter().map(|p| u64::from(p.nodes)).sum();
        if total == 0 || total > MAX_NODES {
            return Err(format!(
                "it has {total} nodes; from 1 to {MAX_NODES} are simulated"
            ));
        }
        if let Some(p) = self.pools.iter().find(|p| p.gpus > 64) {
            return Err(format!("pool {}: at most 64 GPUs per node", p.name));
        }
        Ok(())
    }

    pub fn total_gpus(&self) -> u64 {
        self.pools
            .iter()
            .map(|p| u64::from(p.nodes) * u64::from(p.gpus))
            .sum()
    }

    /// The GPUs per node jobs given only a GPU count are split by: the largest node's.
    pub fn largest_node_gpus(&self) -> u32 {
        self.pools.iter().map(|p| p.gpus).max().unwrap_or(1)
    }

    /// Every node, idle, in a stable order: `POOL-0001`, ...
    pub fn nodes(&self) -> Vec<NodeView> {
        let mut nodes = Vec::new();
        for pool in &self.pools {
            let group = pool.nvlink_group_size.unwrap_or(pool.gpus).max(1);
            let capacity = Resources {
                gpus: pool.gpus,
                cpus: pool.cpus.unwrap_or(8 * pool.gpus.max(1)),
                mem_mib: pool.mem_gib.unwrap_or(64 * u64::from(pool.gpus.max(1))) * 1024,
            };
            for i in 0..pool.nodes {
                nodes.push(NodeView {
                    name: format!("{}-{:04}", pool.name, i + 1),
                    schedulable: true,
                    unavailable_reason: None,
                    gpus: (0..pool.gpus)
                        .map(|index| Gpu {
                            index,
                            model: pool.model.clone(),
                            memory_mib: 0,
                            nvlink_group: index / group,
                            numa_node: None,
                            uuid: String::new(),
                        })
                        .collect(),
                    capacity,
                    free: capacity,
                    free_gpus: (0..pool.gpus).collect(),
                    pool: pool.name.clone(),
                    labels: vec![],
                });
            }
        }
        nodes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorthand_and_its_errors() {
        let c = Cluster::load("4x8:V100").unwrap();
        assert_eq!((c.total_gpus(), c.largest_node_gpus()), (32, 8));
        let nodes = c.nodes();
        assert_eq!(nodes.len(), 4);
        assert_eq!(
            (nodes[0].name.as_str(), nodes[0].gpus[0].model.as_str()),
            ("default-0001", "V100")
        );
        assert_eq!(Cluster::load("2x4").unwrap().total_gpus(), 8);
        for bad in ["4x", "x8", "4*8", "0x8", "4x8:", "4x100"] {
            assert!(Cluster::load(bad).is_err(), "{bad}");
        }
    }
}
