//! GPU index lists (`0-3`, `0,2,5-7`) and their assignment to groups (NVLink domains, NUMA
//! nodes), with a precise message for every way a grouping can be wrong.

use super::InventoryError;

/// Sets of GPU indices, each with the text it came from (for messages). A set's id is its
/// position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSpec {
    /// Where it came from: `--nvlink-groups`, or `nvlink_groups in FILE`.
    pub source_name: String,
    pub groups: Vec<(String, Vec<u32>)>,
}

fn parse_range(text: &str) -> Option<Vec<u32>> {
    let number = |s: &str| {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u32>().ok())
            .flatten()
    };
    match text.split_once('-') {
        Some((lo, hi)) => {
            let (lo, hi) = (number(lo)?, number(hi)?);
            (lo <= hi).then(|| (lo..=hi).collect())
        }
        None => Some(vec![number(text)?]),
    }
}

impl GroupSpec {
    /// The flag form: `0-3,4-7` — each comma-separated range is one group.
    pub fn from_flag(source_name: &str, text: &str) -> Result<GroupSpec, InventoryError> {
        let bad = || InventoryError::BadRange {
            source_name: source_name.to_string(),
            text: text.to_string(),
        };
        let groups = text
            .split(',')
            .map(|item| {
                parse_range(item)
                    .map(|gpus| (item.trim().to_string(), gpus))
                    .ok_or_else(bad)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(GroupSpec {
            source_name: source_name.to_string(),
            groups,
        })
    }

    /// The file form: `["0-3", "4-7"]` — each entry is one group, itself a comma list of
    /// indices and ranges (`"0,2,4-5"`).
    pub fn from_list(source_name: &str, entries: &[String]) -> Result<GroupSpec, InventoryError> {
        let groups = entries
            .iter()
            .map(|entry| {
                let gpus = entry
                    .split(',')
                    .map(parse_range)
                    .collect::<Option<Vec<_>>>()
                    .map(|parts| parts.concat())
                    .ok_or_else(|| InventoryError::BadRange {
                        source_name: source_name.to_string(),
                        text: entry.clone(),
                    })?;
                Ok((entry.trim().to_string(), gpus))
            })
            .collect::<Result<Vec<_>, InventoryError>>()?;
        Ok(GroupSpec {
            source_name: source_name.to_string(),
            groups,
        })
    }

    /// The group of each of `count` GPUs. Rejects indices out of range and GPUs named twice;
    /// with `every_gpu`, also GPUs in no group.
    pub fn assign(
        &self,
        what: &'static str,
        count: u32,
        every_gpu: bool,
    ) -> Result<Vec<Option<u32>>, InventoryError> {
        let mut assigned: Vec<Option<u32>> = vec![None; usize::try_from(count).unwrap_or(0)];
        for (id, (text, gpus)) in self.groups.iter().enumerate() {
            for &gpu in gpus {
                let slot = usize::try_from(gpu)
                    .ok()
                    .and_then(|i| assigned.get_mut(i))
                    .ok_or_else(|| InventoryError::OutOfRange {
                        what,
                        source_name: self.source_name.clone(),
                        id,
                        text: text.clone(),
                        gpu,
                        count,
                    })?;
                if let Some(first) = *slot {
                    let first = usize::try_from(first).unwrap_or(0);
                    return Err(InventoryError::Overlap {
                        what,
                        source_name: self.source_name.clone(),
                        gpu,
                        first,
                        first_text: self
                            .groups
                            .get(first)
                            .map(|(t, _)| t.clone())
                            .unwrap_or_default(),
                        second: id,
                        second_text: text.clone(),
                    });
                }
                *slot = Some(u32::try_from(id).unwrap_or(u32::MAX));
            }
        }
        if every_gpu && let Some(gpu) = assigned.iter().position(Option::is_none) {
            return Err(InventoryError::NotInAnyGroup {
                source_name: self.source_name.clone(),
                gpu: u32::try_from(gpu).unwrap_or(u32::MAX),
            });
        }
        Ok(assigned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(text: &str) -> Result<GroupSpec, InventoryError> {
        GroupSpec::from_flag("--nvlink-groups", text)
    }

    #[test]
    fn flag_ranges_become_groups() {
        let spec = flag("0-3,4-7").unwrap();
        let groups = spec.assign("NVLink group", 8, true).unwrap();
        assert_eq!(groups, [0, 0, 0, 0, 1, 1, 1, 1].map(Some).to_vec());
        let spec = flag("0-1, 2 ,3").unwrap();
        assert_eq!(
            spec.assign("NVLink group", 4, true).unwrap(),
            vec![Some(0), Some(0), Some(1), Some(2)]
        );
    }

    #[test]
    fn list_entries_may_be_scattered() {
        let spec =
            GroupSpec::from_list("numa_nodes in f.toml", &["0,2".into(), "1,3-4".into()]).unwrap();
        assert_eq!(
            spec.assign("NUMA node", 5, false).unwrap(),
            vec![Some(0), Some(1), Some(0), Some(1), Some(1)]
        );
        // NUMA nodes need not cover every GPU.
        assert_eq!(spec.assign("NUMA node", 6, false).unwrap()[5], None);
    }

    #[test]
    fn malformed_ranges_are_named() {
        for bad in ["", "0-", "-3", "a-b", "3-0", "0-3,,4-7", "1.5", "0-3;4-7"] {
            let err = flag(bad).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("invalid GPU range {bad:?} in --nvlink-groups")),
                "{err}"
            );
        }
    }

    #[test]
    fn out_of_range_overlaps_and_gaps_are_rejected_precisely() {
        let err = flag("0-3,4-8")
            .unwrap()
            .assign("NVLink group", 8, true)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "NVLink group 1 (\"4-8\") in --nvlink-groups names GPU 8, but the node has 8 GPUs (0-7)"
        );
        let err = flag("0-3,2-5")
            .unwrap()
            .assign("NVLink group", 6, true)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "GPU 2 is in NVLink group 0 (\"0-3\") and NVLink group 1 (\"2-5\") in --nvlink-groups; \
             every GPU must be in exactly one"
        );
        let err = flag("0-3,5-7")
            .unwrap()
            .assign("NVLink group", 8, true)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "GPU 4 is in no NVLink group in --nvlink-groups; every GPU must be in exactly one \
             (e.g. --nvlink-groups 0-3,4-7)"
        );
        let err = flag("0")
            .unwrap()
            .assign("NVLink group", 0, true)
            .unwrap_err();
        assert!(
            err.to_string().ends_with("but the node has no GPUs"),
            "{err}"
        );
    }
}
