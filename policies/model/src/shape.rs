//! The ways a job can run: its main request, and alternatives on other GPU models or node
//! counts at a relative speed (`-G 8:h100 --alt 2x8:a100@0.6`). The solver picks the one that
//! would finish first.

use serde::{Deserialize, Serialize};

use crate::node::{Gpu, Resources};

/// Speeds are kept in thousandths: 1000 is the main request's speed.
pub const SPEED_ONE: u32 = 1000;
/// The slowest and fastest relative speeds an alternative may name (0.01× to 100×).
pub const MIN_SPEED: u32 = 10;
pub const MAX_SPEED: u32 = 100_000;
/// More alternatives than this is a script gone wrong, not a request.
pub const MAX_ALTERNATIVES: usize = 8;
/// GPU model names a job may ask for: letters, digits and `-_.`, at most this long.
pub const MAX_MODEL_LEN: usize = 64;

/// Another way to run a job: `num_nodes` × `gpus_per_node` GPUs of `gpu_model` (any model
/// when `None`), with the job's CPUs and memory per node, at `speed` thousandths of the main
/// request's speed (its time limit stretches accordingly).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alternative {
    pub num_nodes: u32,
    pub gpus_per_node: u32,
    pub gpu_model: Option<String>,
    pub speed: u32,
}

/// One way a job can run, as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    pub num_nodes: u32,
    pub per_node: Resources,
    /// Only GPUs of this model (see [`gpu_model_matches`]); any GPU when `None`.
    pub gpu_model: Option<String>,
    /// The time limit at this shape's speed; `None`: no limit.
    pub time_limit_ms: Option<u64>,
    /// Only nodes of this pool; any pool when `None`.
    pub pool: Option<String>,
    /// Only nodes carrying every one of these labels.
    pub labels: Vec<String>,
}

impl Shape {
    /// What it asks for on all its nodes together.
    pub fn total(&self) -> Resources {
        let n = self.num_nodes;
        Resources {
            gpus: self.per_node.gpus.saturating_mul(n),
            cpus: self.per_node.cpus.saturating_mul(n),
            mem_mib: self.per_node.mem_mib.saturating_mul(u64::from(n)),
        }
    }

    /// When it would end at the latest if it started at `start` (`None`: no limit).
    pub fn end_if_started(&self, start: u64) -> Option<u64> {
        self.time_limit_ms.map(|limit| start.saturating_add(limit))
    }

    /// Whether a node of `pool` with `labels` may serve this shape.
    pub fn admits(&self, pool: &str, labels: &[String]) -> bool {
        self.pool.as_deref().is_none_or(|wanted| wanted == pool)
            && self.labels.iter().all(|l| labels.contains(l))
    }

    /// Which nodes it may use, in words (`pool gpu, labels ib, nvme`); empty for any.
    pub fn nodes_text(&self) -> String {
        let pool = self.pool.iter().map(|p| format!("pool {p}"));
        let labels =
            (!self.labels.is_empty()).then(|| format!("label(s) {}", self.labels.join(", ")));
        pool.chain(labels).collect::<Vec<_>>().join(", ")
    }

    /// Whether `gpu` may serve this shape.
    pub fn takes(&self, gpu: &Gpu) -> bool {
        self.gpu_model
            .as_deref()
            .is_none_or(|wanted| gpu_model_matches(&gpu.model, wanted))
    }

    /// How the GPU part reads: `8`, `8 × h100`.
    pub fn gpus_text(&self) -> String {
        match &self.gpu_model {
            Some(model) => format!("{} × {model}", self.per_node.gpus),
            None => self.per_node.gpus.to_string(),
        }
    }
}

/// A time limit of the main request, stretched to a shape running at `speed` thousandths of
/// its speed; rounded up, so a slower shape never gets less time than it needs.
pub fn scaled_limit(limit_ms: u64, speed: u32) -> u64 {
    let scaled = u128::from(limit_ms) * u128::from(SPEED_ONE);
    let speed = u128::from(speed.max(1));
    u64::try_from(scaled.div_ceil(speed)).unwrap_or(u64::MAX)
}

/// Whether a GPU whose model is `model` (as NVML names it, e.g. `NVIDIA H100 80GB HBM3`)
/// is what a job asking for `wanted` (e.g. `h100`) means: `wanted` appears in it, ignoring
/// case, as a whole token (letters and digits not running on either side).
pub fn gpu_model_matches(model: &str, wanted: &str) -> bool {
    let model = model.to_ascii_lowercase();
    let wanted = wanted.to_ascii_lowercase();
    if wanted.is_empty() {
        return true;
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    model.match_indices(&wanted).any(|(at, _)| {
        !alnum(model[..at].chars().next_back()) && !alnum(model[at + wanted.len()..].chars().next())
    })
}

/// Why a GPU model name is not acceptable, if it is not.
pub fn check_model_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a GPU model name must not be empty".into());
    }
    if name.len() > MAX_MODEL_LEN {
        return Err(format!(
            "GPU model name {name:?} is longer than {MAX_MODEL_LEN} characters"
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(format!(
            "GPU model name {name:?} may contain only letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

/// Reads a GPU request: `8`, `8:h100`, or Slurm's `h100:8`. `Err` says what is wrong.
pub fn parse_gpus(text: &str) -> Result<(u32, Option<String>), String> {
    let text = text.trim();
    let whole = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let count = |t: &str| {
        t.parse::<u32>()
            .map_err(|_| format!("the GPU count {t:?} is too large"))
    };
    match text.split_once(':') {
        None if whole(text) => Ok((count(text)?, None)),
        None => Err(format!(
            "expected a whole number of GPUs, optionally with a model (8, 8:h100) (got {text:?})"
        )),
        Some((n, model)) if whole(n) => {
            check_model_name(model)?;
            Ok((count(n)?, Some(model.to_string())))
        }
        Some((model, n)) if whole(n) => {
            check_model_name(model)?;
            Ok((count(n)?, Some(model.to_string())))
        }
        Some(_) => Err(format!(
            "expected GPUS:MODEL with a whole number of GPUs, e.g. 8:h100 (got {text:?})"
        )),
    }
}

/// Reads a speed factor (`0.6`, `1`, `1.25`, at most three decimals) into thousandths.
pub fn parse_speed(text: &str) -> Result<u32, String> {
    let bad = || {
        format!(
            "a speed is a factor such as 0.6 or 1.5, between {} and {} (got {text:?})",
            format_speed(MIN_SPEED),
            format_speed(MAX_SPEED)
        )
    };
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty()) || !digits(whole) || !digits(frac) || frac.len() > 3 {
        return Err(bad());
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let frac: u64 = format!("{frac:0<3}").parse().map_err(|_| bad())?;
    let speed = whole
        .checked_mul(u64::from(SPEED_ONE))
        .and_then(|w| w.checked_add(frac))
        .and_then(|s| u32::try_from(s).ok())
        .ok_or_else(bad)?;
    if (MIN_SPEED..=MAX_SPEED).contains(&speed) {
        Ok(speed)
    } else {
        Err(bad())
    }
}

/// Reads an alternative: `[NODESx]GPUS[:MODEL][@SPEED]`, e.g. `2x8:a100@0.6`. Without a
/// node count it is 1; without a speed, the main request's.
pub fn parse_alternative(text: &str) -> Result<Alternative, String> {
    let text = text.trim();
    let (shape, speed) = match text.rsplit_once('@') {
        Some((shape, speed)) => (shape, parse_speed(speed)?),
        None => (text, SPEED_ONE),
    };
    let (nodes, gpus) = match shape.split_once(['x', 'X']) {
        Some((n, gpus)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            let n = n
                .parse::<u32>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| format!("the node count {n:?} must be at least 1"))?;
            (n, gpus)
        }
        _ => (1, shape),
    };
    let (gpus_per_node, gpu_model) = parse_gpus(gpus)?;
    Ok(Alternative {
        num_nodes: nodes,
        gpus_per_node,
        gpu_model,
        speed,
    })
}

/// A speed in thousandths for display: `0.6×`, `1×`, `1.25×`.
pub fn format_speed(speed: u32) -> String {
    format!("{}×", speed_factor(speed))
}

/// A speed in thousandths as the factor users type: `0.6`, `1`, `1.25`.
fn speed_factor(speed: u32) -> String {
    let whole = speed / SPEED_ONE;
    let frac = speed % SPEED_ONE;
    if frac == 0 {
        whole.to_string()
    } else {
        let digits = format!("{frac:03}");
        format!("{whole}.{}", digits.trim_end_matches('0'))
    }
}

/// A GPU request as `-G` takes it: `8`, `8:h100`.
pub fn format_gpus(count: u32, model: Option<&str>) -> String {
    match model {
        Some(model) => format!("{count}:{model}"),
        None => count.to_string(),
    }
}

/// An alternative as `--alt` takes it: `2x8:a100@0.6`; [`parse_alternative`] reads it back.
pub fn format_alternative(alt: &Alternative) -> String {
    format!(
        "{}x{}@{}",
        alt.num_nodes,
        format_gpus(alt.gpus_per_node, alt.gpu_model.as_deref()),
        speed_factor(alt.speed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shape_totals_its_nodes() {
        let shape = Shape {
            num_nodes: 3,
            per_node: Resources {
                gpus: 8,
                cpus: 16,
                mem_mib: 1024,
            },
            gpu_model: None,
            time_limit_ms: None,
            pool: None,
            labels: vec![],
        };
        let total = shape.total();
        assert_eq!((total.gpus, total.cpus, total.mem_mib), (24, 48, 3072));
    }

    #[test]
    fn models_match_whole_tokens_ignoring_case() {
        assert!(gpu_model_matches("NVIDIA H100 80GB HBM3", "h100"));
        assert!(gpu_model_matches("NVIDIA A100-SXM4-80GB", "A100"));
        assert!(gpu_model_matches("NVIDIA A100-SXM4-80GB", "a100-sxm4"));
        assert!(gpu_model_matches("H100", "H100"));
        assert!(!gpu_model_matches("NVIDIA GH100", "h100"));
        assert!(!gpu_model_matches("NVIDIA H1000", "h100"));
        assert!(!gpu_model_matches("NVIDIA A100", "h100"));
        assert!(gpu_model_matches("anything", ""));
    }

    #[test]
    fn a_slower_shape_gets_a_longer_limit_rounded_up() {
        assert_eq!(scaled_limit(3_600_000, SPEED_ONE), 3_600_000);
        assert_eq!(scaled_limit(3_600_000, 600), 6_000_000);
        assert_eq!(scaled_limit(1_000, 3_000), 334);
        assert_eq!(scaled_limit(u64::MAX, MIN_SPEED), u64::MAX);
    }

    #[test]
    fn gpu_requests_read_both_ways_round() {
        assert_eq!(parse_gpus("8"), Ok((8, None)));
        assert_eq!(parse_gpus("8:h100"), Ok((8, Some("h100".into()))));
        assert_eq!(parse_gpus("h100:8"), Ok((8, Some("h100".into()))));
        for bad in [
            "",
            "-2",
            "1.5",
            "8:",
            ":8",
            "h100",
            "8:h 100",
            "a:b",
            "99999999999",
        ] {
            assert!(parse_gpus(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn alternatives_and_speeds_parse() {
        let alt = |n, g, m: Option<&str>, s| Alternative {
            num_nodes: n,
            gpus_per_node: g,
            gpu_model: m.map(str::to_string),
            speed: s,
        };
        assert_eq!(
            parse_alternative("2x8:a100@0.6"),
            Ok(alt(2, 8, Some("a100"), 600))
        );
        assert_eq!(
            parse_alternative("16:a100"),
            Ok(alt(1, 16, Some("a100"), 1000))
        );
        assert_eq!(parse_alternative("4@1.25"), Ok(alt(1, 4, None, 1250)));
        assert_eq!(
            parse_alternative("a100:4@.5"),
            Ok(alt(1, 4, Some("a100"), 500))
        );
        for bad in [
            "", "0x8", "x8", "2x", "8@", "8@0", "8@0.0001", "8@101", "8@-1", "8@fast", "8:@1",
        ] {
            assert!(parse_alternative(bad).is_err(), "{bad:?}");
        }
        for alt in [
            alt(2, 8, Some("a100"), 600),
            alt(1, 0, None, 1000),
            alt(3, 4, None, 10),
        ] {
            assert_eq!(
                parse_alternative(&format_alternative(&alt)),
                Ok(alt.clone())
            );
        }
        assert_eq!(
            format_alternative(&alt(2, 8, Some("a100"), 600)),
            "2x8:a100@0.6"
        );
        assert_eq!(parse_speed("0.01"), Ok(10));
        assert_eq!(parse_speed("100"), Ok(100_000));
        assert!(parse_speed(".").is_err());
    }

    #[test]
    fn model_names_are_checked_and_speeds_read_well() {
        assert!(check_model_name("h100").is_ok());
        assert!(check_model_name("A100-SXM4_80GB.v2").is_ok());
        assert!(check_model_name("").is_err());
        assert!(check_model_name("h 100").is_err());
        assert!(check_model_name(&"x".repeat(65)).is_err());
        assert_eq!(format_speed(600), "0.6×");
        assert_eq!(format_speed(1000), "1×");
        assert_eq!(format_speed(1250), "1.25×");
        assert_eq!(format_speed(10), "0.01×");
    }
}
