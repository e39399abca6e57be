//! The simulated cluster: a shorthand for a uniform one (`32x8:V100`) or a TOML file of
//! pools of identical nodes (see `sim/clusters/`).

use std::path::Path;

use gantry_model::{Gpu, Resources};
use gantry_policies::{NodeView, Switch, Topology};
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
    /// The switch tree, as in the scheduler's topology file; node names are `POOL-0001`...
    #[serde(default, rename = "switch")]
    pub switches: Vec<Switch>,
}

/// The largest cluster the simulator builds: beyond it, a typo.
const MAX_NODES: u64 = 100_000;

impl Cluster {
    /// `text` is a path to a file when one exists there — an Alibaba node list when it ends in
    /// `.csv`, else TOML — or the shorthand.
    pub fn load(text: &str) -> Result<Cluster, ClusterError> {
        let path = Path::new(text);
        if !path.is_file() {
            return Cluster::shorthand(text);
        }
        let body = std::fs::read_to_string(path).map_err(|source| ClusterError::Io {
            path: text.to_string(),
            source,
        })?;
        let file = |why: String| ClusterError::File {
            path: text.to_string(),
            why,
        };
        let cluster = if text.ends_with(".csv") {
            Cluster::node_list(&body).map_err(file)?
        } else {
            toml::from_str(&body).map_err(|e| file(e.to_string()))?
        };
        cluster.check().map_err(file)?;
        Ok(cluster)
    }

    /// An Alibaba node list (`sn,cpu_milli,memory_mib,gpu,model`): one pool per kind of node,
    /// named after its model and GPU count (`V100M16-8g`), in the order kinds first appear.
    fn node_list(body: &str) -> Result<Cluster, String> {
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(body.as_bytes());
        let header = reader.headers().map_err(|e| format!("line 1: {e}"))?;
        if header
            .iter()
            .ne(["sn", "cpu_milli", "memory_mib", "gpu", "model"])
        {
            return Err("line 1: expected the header sn,cpu_milli,memory_mib,gpu,model".into());
        }
        let mut pools: Vec<Pool> = Vec::new();
        for (i, record) in reader.records().enumerate() {
            let line = i + 2;
            let record = record.map_err(|e| format!("line {line}: {e}"))?;
            let number = |at: usize| -> Result<u64, String> {
                let v = record.get(at).unwrap_or("");
                v.parse()
                    .map_err(|_| format!("line {line}: {v:?} is not a whole number"))
            };
            let gpus =
                u32::try_from(number(3)?).map_err(|_| format!("line {line}: too many GPUs"))?;
            let cpus = u32::try_from(number(1)? / 1000)
                .map_err(|_| format!("line {line}: too many CPUs"))?;
            let mem_gib = number(2)? / 1024;
            let model = record.get(4).unwrap_or("").to_string();
            let name = format!("{}-{gpus}g", if model.is_empty() { "cpu" } else { &model });
            match pools
                .iter_mut()
                .find(|p| p.name == name && p.cpus == Some(cpus) && p.mem_gib == Some(mem_gib))
            {
                Some(pool) => pool.nodes += 1,
                None => pools.push(Pool {
                    name,
                    nodes: 1,
                    gpus,
                    model: if model.is_empty() {
                        default_model()
                    } else {
                        model
                    },
                    nvlink_group_size: None,
                    cpus: Some(cpus.max(1)),
                    mem_gib: Some(mem_gib.max(1)),
                }),
            }
        }
        Ok(Cluster {
            pools,
            switches: Vec::new(),
        })
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
            switches: Vec::new(),
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
        let topology = Topology::from_switches(&self.switches).map_err(|e| e.to_string())?;
        let nodes: std::collections::BTreeSet<String> =
            self.nodes().into_iter().map(|n| n.name).collect();
        if let Some(stranger) = topology.nodes().find(|n| !nodes.contains(*n)) {
            return Err(format!(
                "switch tree names node {stranger:?}, which no pool has (nodes are POOL-0001, ...)"
            ));
        }
        Ok(())
    }

    /// The switch tree; empty when the file has none. Checked when the file was loaded.
    pub fn topology(&self) -> Topology {
        Topology::from_switches(&self.switches).unwrap_or_default()
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
    fn a_cluster_file_carries_its_switch_tree() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let write = |text: &str| {
            std::fs::write(&path, text).unwrap();
            Cluster::load(path.to_str().unwrap())
        };
        let pools = "[[pool]]\nnodes = 4\ngpus = 8\n";
        let c = write(&format!(
            "{pools}[[switch]]\nname = \"spine\"\n\
             [[switch]]\nname = \"leaf-a\"\nparent = \"spine\"\nnodes = [\"default-[0001-0002]\"]\n\
             [[switch]]\nname = \"leaf-b\"\nparent = \"spine\"\nnodes = [\"default-[0003-0004]\"]\n"
        ))
        .unwrap();
        let topology = c.topology();
        assert_eq!(topology.switches_of("default-0003"), ["leaf-b", "spine"]);
        let err = write(&format!(
            "{pools}[[switch]]\nname = \"leaf\"\nnodes = [\"gpu-0001\"]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("\"gpu-0001\", which no pool has"), "{err}");
        let err = write(&format!(
            "{pools}[[switch]]\nname = \"leaf\"\nparent = \"nowhere\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown parent"), "{err}");
    }

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

    #[test]
    fn an_alibaba_node_list_becomes_pools_of_like_nodes() {
        let c = Cluster::node_list(
            "sn,cpu_milli,memory_mib,gpu,model\n\
             n0,64000,262144,2,P100\nn1,64000,262144,2,P100\nn2,96000,786432,8,V100M16\n",
        )
        .unwrap();
        let pools: Vec<_> = c
            .pools
            .iter()
            .map(|p| (p.name.as_str(), p.nodes, p.gpus))
            .collect();
        assert_eq!(pools, [("P100-2g", 2, 2), ("V100M16-8g", 1, 8)]);
        assert_eq!((c.pools[1].cpus, c.pools[1].mem_gib), (Some(96), Some(768)));
        assert!(Cluster::node_list("sn,gpu\nn0,2\n").is_err());
        assert!(Cluster::node_list("sn,cpu_milli,memory_mib,gpu,model\nn0,x,1,2,P\n").is_err());
    }
}
