//! The machine's own CPU count and memory, the defaults when none are declared.

use super::InventoryError;

/// The CPUs this process may use (honours affinity and cgroup limits).
pub fn cpu_count() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX))
}

/// Physical memory in MiB, from `/proc/meminfo`.
pub fn memory_mib() -> Result<u64, InventoryError> {
    let text = std::fs::read_to_string("/proc/meminfo")
        .map_err(|e| InventoryError::MachineMemory(e.to_string()))?;
    parse_meminfo_mib(&text)
        .ok_or_else(|| InventoryError::MachineMemory("no MemTotal line".to_string()))
}

/// `MemTotal:       16318412 kB` → MiB.
pub fn parse_meminfo_mib(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut fields = line.split_whitespace().skip(1);
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") | None => Some(value / 1024),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_is_read_in_mib() {
        assert_eq!(
            parse_meminfo_mib("MemTotal:       16318412 kB\nMemFree: 1 kB\n"),
            Some(15935)
        );
        assert_eq!(parse_meminfo_mib("MemFree: 1 kB\n"), None);
        assert!(memory_mib().unwrap() > 0);
        assert!(cpu_count() >= 1);
    }
}
