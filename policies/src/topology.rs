//! The fabric: which switch each node hangs off, and which switch is above which (node →
//! leaf → spine ...), from a TOML file the admin writes. Multi-node jobs are placed under
//! one leaf switch when they fit there, else under as few switches as possible.

use std::collections::{BTreeMap, BTreeSet};

use gantry_model::names::is_plain_name;
use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    /// Per node, its switches from its leaf up to the top.
    paths: BTreeMap<String, Vec<String>>,
    /// Per switch, its parent.
    parents: BTreeMap<String, Option<String>>,
}

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum TopologyError {
    #[error("not a topology file: {0}")]
    Syntax(String),
    #[error("switch name {0:?} must be 1 to 64 letters, digits, '-', '_' or '.'")]
    BadName(String),
    #[error("switch {0:?} appears twice")]
    Duplicate(String),
    #[error("switch {switch:?} names an unknown parent {parent:?}")]
    UnknownParent { switch: String, parent: String },
    #[error("switch {0:?} is its own ancestor")]
    Cycle(String),
    #[error("node {node:?} is under both {first:?} and {second:?}")]
    TwoSwitches {
        node: String,
        first: String,
        second: String,
    },
    #[error("invalid node list {0:?}: {1}")]
    BadNodes(String, String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default, rename = "switch")]
    switches: Vec<Switch>,
}

/// One `[[switch]]` table: a topology file is a list of them (so is the simulator's
/// cluster file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Switch {
    pub name: String,
    pub parent: Option<String>,
    /// The nodes hanging off it (`gpu[01-16]` ranges allowed).
    #[serde(default)]
    pub nodes: Vec<String>,
}

impl Topology {
    /// Reads a topology file:
    ///
    /// ```toml
    /// [[switch]]
    /// name = "spine-1"
    ///
    /// [[switch]]
    /// name = "leaf-1"
    /// parent = "spine-1"
    /// nodes = ["gpu[01-16]", "login-1"]
    /// ```
    pub fn from_toml(text: &str) -> Result<Topology, TopologyError> {
        let file: File = toml::from_str(text).map_err(|e| TopologyError::Syntax(e.to_string()))?;
        Topology::from_switches(&file.switches)
    }

    /// The topology the switches describe.
    pub fn from_switches(switches: &[Switch]) -> Result<Topology, TopologyError> {
        let mut parents: BTreeMap<String, Option<String>> = BTreeMap::new();
        for s in switches {
            check_name(&s.name)?;
            if parents.insert(s.name.clone(), s.parent.clone()).is_some() {
                return Err(TopologyError::Duplicate(s.name.clone()));
            }
        }
        for (switch, parent) in &parents {
            if let Some(parent) = parent
                && !parents.contains_key(parent)
            {
                return Err(TopologyError::UnknownParent {
                    switch: switch.clone(),
                    parent: parent.clone(),
                });
            }
        }
        let mut topology = Topology {
            paths: BTreeMap::new(),
            parents,
        };
        for switch in topology.parents.keys() {
            topology.switch_path(switch)?;
        }
        let mut leaf_of: BTreeMap<String, String> = BTreeMap::new();
        for s in switches {
            for pattern in &s.nodes {
                for node in expand(pattern)? {
                    if let Some(first) = leaf_of.insert(node.clone(), s.name.clone()) {
                        return Err(TopologyError::TwoSwitches {
                            node,
                            first,
                            second: s.name.clone(),
                        });
                    }
                }
            }
        }
        for (node, leaf) in leaf_of {
            let path = topology.switch_path(&leaf)?;
            topology.paths.insert(node, path);
        }
        Ok(topology)
    }

    /// `switch` and the switches above it, nearest first.
    fn switch_path(&self, switch: &str) -> Result<Vec<String>, TopologyError> {
        let mut path = vec![switch.to_string()];
        let mut at = switch;
        while let Some(Some(parent)) = self.parents.get(at) {
            if path.len() > self.parents.len() {
                return Err(TopologyError::Cycle(switch.to_string()));
            }
            path.push(parent.clone());
            at = parent;
        }
        Ok(path)
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The switches above `node`, its leaf first; empty for a node the file does not name.
    pub fn switches_of(&self, node: &str) -> &[String] {
        self.paths.get(node).map_or(&[], Vec::as_slice)
    }

    /// The nodes the file names, for a check against the nodes the scheduler knows.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.paths.keys().map(String::as_str)
    }
}

fn check_name(name: &str) -> Result<(), TopologyError> {
    is_plain_name(name)
        .then_some(())
        .ok_or_else(|| TopologyError::BadName(name.to_string()))
}

/// `gpu[01-03,07]` → gpu01, gpu02, gpu03, gpu07 (the width of the lower bound is kept);
/// a name without brackets is itself.
pub fn expand(pattern: &str) -> Result<Vec<String>, TopologyError> {
    let bad = |why: &str| TopologyError::BadNodes(pattern.to_string(), why.to_string());
    let Some((prefix, rest)) = pattern.split_once('[') else {
        if pattern.is_empty() || pattern.contains(']') || pattern.contains(',') {
            return Err(bad("expected a node name or prefix[a-b,c]"));
        }
        return Ok(vec![pattern.to_string()]);
    };
    let (inner, suffix) = rest.split_once(']').ok_or_else(|| bad("missing ]"))?;
    if suffix.contains('[') || suffix.contains(']') {
        return Err(bad("one bracket group only"));
    }
    let mut names = BTreeSet::new();
    for item in inner.split(',') {
        let (lo, hi) = item.split_once('-').unwrap_or((item, item));
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(lo) || !digits(hi) {
            return Err(bad("ranges are numbers, e.g. [01-16]"));
        }
        let (a, b): (u64, u64) = (
            lo.parse().map_err(|_| bad("number too large"))?,
            hi.parse().map_err(|_| bad("number too large"))?,
        );
        if a > b || b - a > 100_000 {
            return Err(bad("a range runs from low to high, at most 100000 long"));
        }
        for n in a..=b {
            names.insert(format!("{prefix}{n:0width$}{suffix}", width = lo.len()));
        }
    }
    Ok(names.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
        [[switch]]
        name = "spine"

        [[switch]]
        name = "leaf-1"
        parent = "spine"
        nodes = ["gpu[01-02]"]

        [[switch]]
        name = "leaf-2"
        parent = "spine"
        nodes = ["gpu03", "gpu[04,06-07]"]
    "#;

    #[test]
    fn a_file_gives_every_node_its_switches() {
        let t = Topology::from_toml(FILE).unwrap();
        assert_eq!(t.switches_of("gpu02"), ["leaf-1", "spine"]);
        assert_eq!(t.switches_of("gpu07"), ["leaf-2", "spine"]);
        assert!(t.switches_of("gpu05").is_empty());
        assert_eq!(t.nodes().count(), 6);
        assert!(Topology::default().is_empty());
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let cases = [
            ("[[switch]]\nname = \"a b\"", "must be 1 to 64"),
            (
                "[[switch]]\nname = \"a\"\n[[switch]]\nname = \"a\"",
                "appears twice",
            ),
            (
                "[[switch]]\nname = \"a\"\nparent = \"z\"",
                "unknown parent \"z\"",
            ),
            (
                "[[switch]]\nname = \"a\"\nparent = \"b\"\n[[switch]]\nname = \"b\"\nparent = \"a\"",
                "is its own ancestor",
            ),
            (
                "[[switch]]\nname = \"a\"\nnodes = [\"n1\"]\n[[switch]]\nname = \"b\"\nnodes = [\"n[1-2]\"]",
                "node \"n1\" is under both \"a\" and \"b\"",
            ),
            (
                "[[switch]]\nname = \"a\"\nnodes = [\"n[2-1]\"]",
                "low to high",
            ),
            (
                "[[switch]]\nname = \"a\"\nnodes = [\"n[x]\"]",
                "ranges are numbers",
            ),
            (
                "[[switch]]\nname = \"a\"\ncolour = 1",
                "not a topology file",
            ),
        ];
        for (text, expected) in cases {
            let err = Topology::from_toml(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn ranges_expand_with_their_width() {
        assert_eq!(expand("gpu[08-10]").unwrap(), ["gpu08", "gpu09", "gpu10"]);
        assert_eq!(expand("r[1,3]-a").unwrap(), ["r1-a", "r3-a"]);
        assert_eq!(expand("solo").unwrap(), ["solo"]);
        assert!(expand("n[1-2").is_err());
        assert!(expand("n[1][2]").is_err());
    }
}
