//! How long a Pollux/Sia benchmark job runs with a fixed GPU count and batch size, from the
//! measured profiles the Pollux artifact ships (`<app>/placements.csv`, `scalability.csv`,
//! `validation-<batch>.csv`). The model is the artifact's for rigid jobs
//! (petuum/adaptdl `osdi21-artifact`, `simulator/applications.py` and `job.py`):
//!
//! - the batch is split into `replicas × atomic × (accum + 1)`, `atomic` at most the app's
//!   largest local batch;
//! - a step takes `step + accum × (step − sync)` seconds, `step` and `sync` interpolated
//!   linearly in the local batch among the measurements of the placement (GPUs per node, e.g.
//!   `44`), or for placements on more than 4 nodes among the scalability measurements with the
//!   same node and replica counts;
//! - one step advances `gain = (var + sqr) / (var / scale + sqr)` units of progress, where
//!   `scale` is the batch over the app's initial batch and `sqr`, `var` are the gradient
//!   statistics of the current epoch, interpolated between the batch sizes measured;
//! - the job is done after the app's number of epochs.
//!
//! Summed in closed form per epoch; the artifact steps in 60 s intervals and rounds each epoch
//! to a second, which lands within about 1.5% of this.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The applications of the Pollux and Sia workloads: name, epochs to completion, and the
/// largest local batch when the artifact overrides the profile's.
const APPS: [(&str, u32, Option<u32>); 6] = [
    ("cifar10", 100, None),
    ("bert", 2, None),
    ("deepspeech2", 80, None),
    ("yolov3", 50, Some(8)),
    ("imagenet", 90, None),
    ("ncf", 10, None),
];

/// `(local batch, step seconds, sync seconds)`, or for validation rows `(progress at the
/// epoch's end, grad_sqr, grad_var)`.
type Measure = (f64, f64, f64);

/// Placements in `placements.csv` span at most this many nodes.
const PLACEMENT_NODES: u32 = 4;

/// One application's profile.
#[derive(Debug)]
pub struct App {
    max_epochs: u32,
    init_bsz: u32,
    max_bsz: u32,
    max_local_bsz: u32,
    /// Per placement string, `(local_bsz, step_s, sync_s)` sorted by batch.
    placements: BTreeMap<String, Vec<Measure>>,
    /// Per `(nodes, replicas)`, the same.
    scalability: BTreeMap<(u32, u32), Vec<Measure>>,
    /// Per batch size measured, per epoch, `(progress at its end, grad_sqr, grad_var)`.
    validation: BTreeMap<u32, Vec<Measure>>,
}

/// Every application's profile, read from a `profiles/` folder (`<app>/...`).
#[derive(Debug)]
pub struct Profiles {
    apps: BTreeMap<String, App>,
}

impl Profiles {
    /// The profiles of the applications `dir` has a folder for (at least one).
    pub fn load(dir: &Path) -> Result<Profiles, String> {
        let mut apps = BTreeMap::new();
        for (name, max_epochs, max_local) in APPS {
            if !dir.join(name).is_dir() {
                continue;
            }
            let app = App::load(&dir.join(name), max_epochs, max_local)
                .map_err(|why| format!("profile {name} in {}: {why}", dir.display()))?;
            apps.insert(name.to_string(), app);
        }
        if apps.is_empty() {
            return Err(format!(
                "{} has no application profiles ({})",
                dir.display(),
                APPS.map(|a| a.0).join(", ")
            ));
        }
        Ok(Profiles { apps })
    }

    /// The folder of profiles for a workload file: `--app-profiles` when given, else a
    /// `sia-sosp23/profiles` or `profiles` folder beside the trace or above it (the layout of
    /// `../shared/traces/sia-pollux-workloads`).
    pub fn find(trace: &Path, given: Option<&Path>) -> Result<PathBuf, String> {
        if let Some(dir) = given {
            return Ok(dir.to_path_buf());
        }
        let start = trace.canonicalize().unwrap_or_else(|_| trace.to_path_buf());
        start
            .ancestors()
            .skip(1)
            .flat_map(|a| [a.join("sia-sosp23/profiles"), a.join("profiles")])
            .find(|p| APPS.iter().any(|a| p.join(a.0).is_dir()))
            .ok_or_else(|| {
                "Pollux workloads need the applications' throughput profiles: none found above \
                 the trace; give --app-profiles DIR"
                    .to_string()
            })
    }

    pub fn app(&self, name: &str) -> Option<&App> {
        self.apps.get(name)
    }
}

impl App {
    fn load(dir: &Path, max_epochs: u32, max_local: Option<u32>) -> Result<App, String> {
        let placements = rows(&dir.join("placements.csv"), 4)?;
        let scalability = rows(&dir.join("scalability.csv"), 5)?;
        let mut by_placement: BTreeMap<String, Vec<Measure>> = BTreeMap::new();
        for r in &placements {
            by_placement.entry(r.key.clone()).or_default().push((
                r.values[0],
                r.values[1],
                r.values[2],
            ));
        }
        let mut by_size: BTreeMap<(u32, u32), Vec<Measure>> = BTreeMap::new();
        for r in &scalability {
            let (nodes, replicas) = (r.key_number()?, r.values[0] as u32);
            by_size.entry((nodes, replicas)).or_default().push((
                r.values[1],
                r.values[2],
                r.values[3],
            ));
        }
        let by_placement = by_placement
            .into_iter()
            .map(|(k, v)| (k, averaged(v)))
            .collect();
        let by_size = by_size.into_iter().map(|(k, v)| (k, averaged(v))).collect();
        let mut validation = BTreeMap::new();
        let entries =
            std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(bsz) = name
                .strip_prefix("validation-")
                .and_then(|n| n.strip_suffix(".csv"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            // progress,iteration,metric,grad_sqr,grad_var
            let epochs = rows(&entry.path(), 5)?
                .iter()
                .map(|r| Ok((r.key_float()?, r.values[2], r.values[3])))
                .collect::<Result<Vec<_>, String>>()?;
            validation.insert(bsz, epochs);
        }
        let (Some(&init_bsz), Some(&max_bsz)) =
            (validation.keys().next(), validation.keys().next_back())
        else {
            return Err("no validation-<batch>.csv".into());
        };
        if validation.values().any(|v| v.is_empty()) {
            return Err("an empty validation file".into());
        }
        let largest_local = placements
            .iter()
            .map(|r| r.values[0] as u32)
            .max()
            .ok_or("placements.csv is empty")?;
        Ok(App {
            max_epochs,
            init_bsz,
            max_bsz,
            max_local_bsz: max_local.unwrap_or(largest_local),
            placements: by_placement,
            scalability: by_size,
            validation,
        })
    }

    /// Seconds to completion with `replicas` GPUs, `per_node` on each node, and a total
    /// batch of `batch`.
    pub fn run_time_s(&self, replicas: u32, per_node: u32, batch: u32) -> Result<f64, String> {
        if replicas == 0 || per_node == 0 || batch == 0 {
            return Err("needs at least one GPU and a batch".into());
        }
        let local = batch.div_ceil(replicas);
        let mut accum = local.div_ceil(self.max_local_bsz).saturating_sub(1);
        if replicas == 1 && batch > self.init_bsz {
            accum = accum.max(1);
        }
        let atomic = local
            .div_ceil(accum + 1)
            .min(self.max_bsz / (replicas * (accum + 1)))
            .max(1);
        let effective = f64::from(replicas * atomic * (accum + 1));
        let nodes = replicas.div_ceil(per_node);
        let table = if nodes <= PLACEMENT_NODES {
            let placement = per_node.to_string().repeat(nodes as usize);
            self.placements.get(&placement).ok_or_else(|| {
                format!("no measurements for placement {placement} (a digit per node: its GPUs)")
            })?
        } else {
            self.scalability
                .get(&(nodes, replicas))
                .ok_or_else(|| format!("no measurements for {replicas} GPUs on {nodes} nodes"))?
        };
        let (step, sync) = interpolate(table, f64::from(atomic)).ok_or_else(|| {
            format!("local batch {atomic} is outside the measured range for {replicas} GPUs")
        })?;
        let iteration = step + f64::from(accum) * (step - sync);
        let scale = effective / f64::from(self.init_bsz);
        let mut total = 0.0;
        let mut done = 0.0;
        for epoch in 0..self.max_epochs as usize {
            let end = self
                .validation
                .values()
                .filter_map(|v| v.get(epoch).map(|r| r.0))
                .fold(f64::INFINITY, f64::min);
            if !end.is_finite() {
                break;
            }
            let (sqr, var) = self.gradient(effective, epoch);
            let gain = (var + sqr) / (var / scale + sqr);
            total += (end - done) * iteration / gain;
            done = end;
        }
        Ok(total)
    }

    /// `(grad_sqr, grad_var)` at `epoch` for a total batch of `batch`: linear between the
    /// nearest batch sizes measured, the nearest one outside them.
    fn gradient(&self, batch: f64, epoch: usize) -> (f64, f64) {
        let at = |v: &Vec<Measure>| {
            let r = v[epoch.min(v.len() - 1)];
            (r.1, r.2)
        };
        let below = self.validation.range(..=batch as u32).next_back();
        let above = self.validation.range(batch.ceil() as u32..).next();
        match (below, above) {
            (Some((&b0, v0)), Some((&b1, v1))) if b1 > b0 => {
                let t = (batch - f64::from(b0)) / f64::from(b1 - b0);
                let (s0, g0) = at(v0);
                let (s1, g1) = at(v1);
                (s0 + t * (s1 - s0), g0 + t * (g1 - g0))
            }
            (Some((_, v)), _) | (None, Some((_, v))) => at(v),
            (None, None) => (1.0, 0.0),
        }
    }
}

/// Means of the rows that share a local batch, sorted by it.
fn averaged(rows: Vec<Measure>) -> Vec<Measure> {
    let mut sums: BTreeMap<u64, (f64, f64, f64, f64)> = BTreeMap::new();
    for (bsz, step, sync) in rows {
        let s = sums.entry(bsz.to_bits()).or_default();
        *s = (bsz, s.1 + step, s.2 + sync, s.3 + 1.0);
    }
    let mut out: Vec<Measure> = sums
        .into_values()
        .map(|(bsz, step, sync, n)| (bsz, step / n, sync / n))
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// `(step, sync)` at local batch `x`, linear between measurements; `None` outside them.
fn interpolate(table: &[(f64, f64, f64)], x: f64) -> Option<(f64, f64)> {
    let hi = table.iter().position(|r| r.0 >= x)?;
    let r1 = table[hi];
    if r1.0 == x || hi == 0 {
        return (r1.0 == x).then_some((r1.1, r1.2));
    }
    let r0 = table[hi - 1];
    let t = (x - r0.0) / (r1.0 - r0.0);
    Some((r0.1 + t * (r1.1 - r0.1), r0.2 + t * (r1.2 - r0.2)))
}

/// A CSV row: its first column as text, the others as numbers.
struct Row {
    key: String,
    values: Vec<f64>,
}

impl Row {
    fn key_number(&self) -> Result<u32, String> {
        self.key
            .parse()
            .map_err(|_| format!("{:?} is not a whole number", self.key))
    }

    fn key_float(&self) -> Result<f64, String> {
        self.key
            .parse()
            .map_err(|_| format!("{:?} is not a number", self.key))
    }
}

/// The rows of a profile CSV with `columns` columns (a header first).
fn rows(path: &Path, columns: usize) -> Result<Vec<Row>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let bad = |why: &str| format!("{}:{}: {why}", path.display(), i + 1);
        if fields.len() != columns {
            return Err(bad(&format!("expected {columns} fields")));
        }
        let values = fields[1..]
            .iter()
            .map(|f| {
                f.parse::<f64>()
                    .map_err(|_| bad(&format!("{f:?} is not a number")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if values.iter().any(|v| !v.is_finite() || *v < 0.0) {
            return Err(bad("a negative or infinite measurement"));
        }
        out.push(Row {
            key: fields[0].to_string(),
            values,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pollux/profiles")
    }

    /// The run times the Pollux artifact's model gives (worked by hand from its code): cifar10
    /// on 2 nodes × 4 GPUs with a batch of 2048, and on 4 × 4 with 4096.
    #[test]
    fn run_times_follow_the_artifacts_model() {
        let profiles = Profiles::load(&fixture()).unwrap();
        let cifar = profiles.app("cifar10").unwrap();
        let close = |got: f64, want: f64| (got - want).abs() < 0.5;
        let t = cifar.run_time_s(8, 4, 2048).unwrap();
        assert!(close(t, 869.0), "{t}");
        let t = cifar.run_time_s(16, 4, 4096).unwrap();
        assert!(close(t, 478.9), "{t}");
        // Placements without measurements, and a local batch outside them, are errors.
        let err = cifar.run_time_s(4, 2, 256).unwrap_err();
        assert!(err.contains("placement 22"), "{err}");
        let err = cifar.run_time_s(8, 4, 64).unwrap_err();
        assert!(err.contains("outside the measured range"), "{err}");
        assert!(cifar.run_time_s(0, 4, 64).is_err());
        assert!(profiles.app("bert").is_none());
    }

    #[test]
    fn profiles_are_found_above_the_trace_or_refused() {
        let trace = fixture().parent().unwrap().join("workload.csv");
        assert_eq!(
            Profiles::find(&trace, None).unwrap(),
            fixture().canonicalize().unwrap()
        );
        let empty = tempfile::tempdir().unwrap();
        let err = Profiles::load(empty.path()).unwrap_err();
        assert!(err.contains("no application profiles"), "{err}");
    }
}
