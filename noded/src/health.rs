//! GPU health: failures the daemon reports to the scheduler, which then gives the GPU to no
//! job, stops the jobs on it (to run again elsewhere) and drains the node. Two sources:
//!
//! - NVML, when the GPUs came from it: a critical XID event of a hardware kind (see
//!   [`HARDWARE_XIDS`]; the XIDs an application's own faults cause are only logged), a GPU
//!   that stops answering (`GPU is lost`), or one whose count of uncorrectable (volatile) ECC
//!   errors grows after the daemon started.
//! - The fault file `<data-dir>/gpu-faults`: one `INDEX REASON` per line, appended to by an
//!   admin or a test — fire drills, and GPUs of a declared inventory.
//!
//! A GPU is reported once per daemon run; the registration of a later session lists every
//! failure seen so far.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enum_wrappers::device::{EccCounter, MemoryError};
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{EventSet, Nvml};
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// The fault file, in the data dir.
pub const FAULT_FILE: &str = "gpu-faults";

/// How often the sources are read: a failed GPU's jobs are lost work already.
const POLL: Duration = Duration::from_millis(500);

/// XIDs that mean the GPU itself is failing (NVIDIA's XID catalogue): double-bit and
/// uncontained ECC errors, row remapping and page retirement failures, NVLink errors, a GPU
/// fallen off the bus, GSP failures. Others (13, 31, 43, 45, 68...) come from what an
/// application did and do not take a GPU out of service.
pub const HARDWARE_XIDS: [u64; 13] = [48, 61, 62, 63, 64, 74, 79, 92, 94, 95, 119, 120, 140];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuFault {
    pub gpu: u32,
    pub reason: String,
}

/// Starts watching `gpus` (their indices); faults arrive on the receiver, each GPU once.
pub fn watch(data_dir: &Path, gpus: Vec<u32>, nvml: bool) -> mpsc::UnboundedReceiver<GpuFault> {
    let (tx, rx) = mpsc::unbounded_channel();
    let gpus: BTreeSet<u32> = gpus.into_iter().collect();
    let mut watcher = Watcher {
        fault_file: data_dir.join(FAULT_FILE),
        nvml: nvml.then(|| NvmlHealth::start(&gpus)).flatten(),
        gpus,
        reported: BTreeSet::new(),
        bad_lines: BTreeSet::new(),
    };
    // NVML calls block: a thread of its own, ending when the daemon drops the receiver.
    let spawned = std::thread::Builder::new()
        .name("gpu-health".into())
        .spawn(move || {
            while !tx.is_closed() {
                for fault in watcher.poll() {
                    if tx.send(fault).is_err() {
                        return;
                    }
                }
                std::thread::sleep(POLL);
            }
        });
    if let Err(e) = spawned {
        warn!("cannot start the GPU health watcher: {e}");
    }
    rx
}

struct Watcher {
    fault_file: PathBuf,
    gpus: BTreeSet<u32>,
    nvml: Option<NvmlHealth>,
    reported: BTreeSet<u32>,
    /// Lines of the fault file already warned about.
    bad_lines: BTreeSet<String>,
}

impl Watcher {
    /// New faults since the last poll.
    fn poll(&mut self) -> Vec<GpuFault> {
        let mut found = self.read_fault_file();
        if let Some(nvml) = &mut self.nvml {
            found.extend(nvml.poll(&self.gpus));
        }
        found
            .into_iter()
            .filter(|f| self.reported.insert(f.gpu))
            .collect()
    }

    fn read_fault_file(&mut self) -> Vec<GpuFault> {
        let Ok(text) = std::fs::read_to_string(&self.fault_file) else {
            return Vec::new();
        };
        let mut faults = Vec::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            match parse_fault(line, &self.gpus) {
                Ok(fault) => faults.push(fault),
                Err(why) => {
                    if self.bad_lines.insert(line.to_string()) {
                        warn!(file = %self.fault_file.display(), line, "ignored: {why}");
                    }
                }
            }
        }
        faults
    }
}

/// `INDEX REASON` (the reason may be empty).
fn parse_fault(line: &str, gpus: &BTreeSet<u32>) -> Result<GpuFault, String> {
    let (index, reason) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let gpu: u32 = index
        .parse()
        .map_err(|_| format!("{index:?} is not a GPU index"))?;
    if !gpus.contains(&gpu) {
        return Err(format!("this node has no GPU {gpu}"));
    }
    let reason = match reason.trim() {
        "" => "reported in the fault file".to_string(),
        text => text.to_string(),
    };
    Ok(GpuFault { gpu, reason })
}

/// NVML's view: critical XID events, uncorrectable ECC errors counted from the daemon's
/// start, lost GPUs.
struct NvmlHealth {
    /// Lives as long as the daemon: the event set borrows it.
    nvml: &'static Nvml,
    ecc_at_start: BTreeMap<u32, u64>,
    /// `None` when NVML would not register XID events for every GPU watched.
    xid_events: Option<EventSet<'static>>,
}

impl NvmlHealth {
    fn start(gpus: &BTreeSet<u32>) -> Option<NvmlHealth> {
        let nvml: &'static Nvml = match Nvml::init() {
            Ok(nvml) => Box::leak(Box::new(nvml)),
            Err(e) => {
                warn!("GPU health is not watched through NVML: {e}");
                return None;
            }
        };
        let xid_events = register_xid_events(nvml, gpus)
            .inspect_err(|e| warn!("XID events are not watched: {e}"))
            .ok();
        Some(NvmlHealth {
            nvml,
            ecc_at_start: BTreeMap::new(),
            xid_events,
        })
    }

    fn poll(&mut self, gpus: &BTreeSet<u32>) -> Vec<GpuFault> {
        let mut faults = self.xid_faults();
        for &gpu in gpus {
            let ecc = self.nvml.device_by_index(gpu).and_then(|device| {
                device.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile)
            });
            match ecc {
                Ok(count) => {
                    let start = *self.ecc_at_start.entry(gpu).or_insert(count);
                    if count > start {
                        faults.push(GpuFault {
                            gpu,
                            reason: format!("{} uncorrectable ECC error(s) (NVML)", count - start),
                        });
                    }
                }
                Err(NvmlError::GpuLost) => faults.push(GpuFault {
                    gpu,
                    reason: "the GPU is lost (NVML)".to_string(),
                }),
                // ECC off or not supported: nothing to watch on that GPU.
                Err(e) => debug!(gpu, "no ECC count: {e}"),
            }
        }
        faults
    }

    /// The hardware XIDs seen since the last poll (the others are logged).
    fn xid_faults(&self) -> Vec<GpuFault> {
        let Some(events) = &self.xid_events else {
            return Vec::new();
        };
        let mut faults = Vec::new();
        loop {
            match events.wait(0) {
                Ok(event) => {
                    let Ok(gpu) = event.device.index() else {
                        continue;
                    };
                    match event.event_data {
                        Some(XidError::Value(xid)) if HARDWARE_XIDS.contains(&xid) => {
                            faults.push(GpuFault {
                                gpu,
                                reason: format!("XID {xid} (NVML)"),
                            });
                        }
                        other => warn!(gpu, xid = ?other, "XID event: not a hardware failure"),
                    }
                }
                Err(NvmlError::Timeout) => return faults,
                Err(e) => {
                    debug!("no XID event read: {e}");
                    return faults;
                }
            }
        }
    }
}

/// One event set with the critical XID events of every GPU watched.
fn register_xid_events(
    nvml: &'static Nvml,
    gpus: &BTreeSet<u32>,
) -> Result<EventSet<'static>, NvmlError> {
    let mut set = nvml.create_event_set()?;
    for &gpu in gpus {
        set = nvml
            .device_by_index(gpu)?
            .register_events(EventTypes::CRITICAL_XID_ERROR, set)
            .map_err(|e| e.error)?;
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_lines_name_a_gpu_of_the_node_and_a_reason() {
        let gpus: BTreeSet<u32> = [0, 1].into();
        assert_eq!(
            parse_fault("1 XID 79: fell off the bus", &gpus),
            Ok(GpuFault {
                gpu: 1,
                reason: "XID 79: fell off the bus".into()
            })
        );
        assert_eq!(
            parse_fault("0", &gpus).unwrap().reason,
            "reported in the fault file"
        );
        assert!(parse_fault("7 x", &gpus).unwrap_err().contains("no GPU 7"));
        assert!(
            parse_fault("gpu1 x", &gpus)
                .unwrap_err()
                .contains("not a GPU index")
        );
    }

    /// Asked to watch NVML where there is no driver (this machine), the watcher says so in
    /// the log and still watches the fault file.
    #[test]
    fn without_nvml_the_fault_file_is_still_watched() {
        let dir = tempfile::tempdir().unwrap();
        let mut faults = watch(dir.path(), vec![0, 1], true);
        std::fs::write(dir.path().join(FAULT_FILE), "1 XID 79\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let fault = loop {
            match faults.try_recv() {
                Ok(fault) => break fault,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("no fault reported: {e}"),
            }
        };
        assert_eq!(
            fault,
            GpuFault {
                gpu: 1,
                reason: "XID 79".into()
            }
        );
    }

    #[test]
    fn each_gpu_is_reported_once_and_bad_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut watcher = Watcher {
            fault_file: dir.path().join(FAULT_FILE),
            gpus: [0, 1].into(),
            nvml: None,
            reported: BTreeSet::new(),
            bad_lines: BTreeSet::new(),
        };
        assert!(watcher.poll().is_empty(), "no file, no fault");
        std::fs::write(&watcher.fault_file, "1 ECC\nnonsense\n").unwrap();
        assert_eq!(
            watcher.poll(),
            [GpuFault {
                gpu: 1,
                reason: "ECC".into()
            }]
        );
        std::fs::write(&watcher.fault_file, "1 ECC\n0 XID 48\n").unwrap();
        assert_eq!(
            watcher.poll(),
            [GpuFault {
                gpu: 0,
                reason: "XID 48".into()
            }]
        );
        assert!(watcher.poll().is_empty());
    }
}
