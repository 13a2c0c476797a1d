//! `coordinator sysinfo`: what the seed's `print_sysinfo` printed, for a Rust build —
//! so every benchmark result can say which machine and compiler made it.

use crate::cli::Format;
use crate::output::json_io;
use serde::Serialize;
use std::collections::BTreeSet;
use std::io::{self, Write};

/// The machine and the build.
#[derive(Debug, Clone, Serialize)]
pub struct SysInfo {
    /// This crate's version.
    pub version: String,
    /// `rustc -V` of the compiler that built this binary.
    pub rustc: String,
    /// Target triple.
    pub target: String,
    /// Cargo profile (debug or release).
    pub profile: String,
    /// Operating system.
    pub system: String,
    /// Kernel release.
    pub release: String,
    /// Machine architecture.
    pub machine: String,
    /// CPU model.
    pub processor: String,
    /// Logical CPUs online.
    pub logical_cores: usize,
    /// Logical CPUs this process may use (affinity, cgroup quota).
    pub available_cores: usize,
    /// Physical cores, when the OS says.
    pub physical_cores: Option<usize>,
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

impl SysInfo {
    /// Reads it off this machine.
    pub fn collect() -> SysInfo {
        let cpuinfo = read("/proc/cpuinfo").unwrap_or_default();
        let field = |name: &str| {
            cpuinfo.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == name).then(|| v.trim().to_owned())
            })
        };
        let logical = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count();
        let available = std::thread::available_parallelism().map_or(1, usize::from);
        SysInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            rustc: env!("COORDINATOR_RUSTC").to_owned(),
            target: env!("COORDINATOR_TARGET").to_owned(),
            profile: env!("COORDINATOR_PROFILE").to_owned(),
            system: read("/proc/sys/kernel/ostype")
                .unwrap_or_else(|| std::env::consts::OS.to_owned()),
            release: read("/proc/sys/kernel/osrelease").unwrap_or_else(|| "unknown".into()),
            machine: std::env::consts::ARCH.to_owned(),
            processor: field("model name")
                .or_else(|| field("Model"))
                .or_else(|| field("cpu model"))
                .unwrap_or_else(|| "unknown".into()),
            logical_cores: if logical > 0 { logical } else { available },
            available_cores: available,
            physical_cores: physical_cores(&cpuinfo),
        }
    }

    /// Writes it as the seed did, one `name : value` per line, or as JSON.
    pub fn write(&self, out: &mut (impl Write + ?Sized), format: Format) -> io::Result<()> {
        if format == Format::Json {
            serde_json::to_writer_pretty(&mut *out, self).map_err(json_io)?;
            return writeln!(out);
        }
        let physical = self
            .physical_cores
            .map_or_else(|| "unknown".to_owned(), |n| n.to_string());
        writeln!(out, "coordinator     : {}", self.version)?;
        writeln!(
            out,
            "compiler        : {} ({}, {})",
            self.rustc, self.target, self.profile
        )?;
        writeln!(out)?;
        writeln!(out, "system          : {}", self.system)?;
        writeln!(out, "release         : {}", self.release)?;
        writeln!(out, "machine         : {}", self.machine)?;
        writeln!(out, "processor       : {}", self.processor)?;
        writeln!(
            out,
            "CPU count       : {} logical ({} available to this process), {physical} physical",
            self.logical_cores, self.available_cores
        )
    }
}

/// Distinct (physical id, core id) pairs in /proc/cpuinfo, when it lists them.
fn physical_cores(cpuinfo: &str) -> Option<usize> {
    let mut cores = BTreeSet::new();
    let (mut package, mut core) = (None, None);
    for line in cpuinfo.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            if let Some(c) = core.take() {
                cores.insert((package.take().unwrap_or(0), c));
            }
            package = None;
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            match k.trim() {
                "physical id" => package = v.trim().parse::<u32>().ok(),
                "core id" => core = v.trim().parse::<u32>().ok(),
                _ => {}
            }
        }
    }
    (!cores.is_empty()).then_some(cores.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_physical_cores_from_cpuinfo() {
        let two_threads_one_core = "processor : 0\nphysical id : 0\ncore id : 0\n\nprocessor : 1\nphysical id : 0\ncore id : 0\n";
        assert_eq!(physical_cores(two_threads_one_core), Some(1));
        let two_sockets = "processor : 0\nphysical id : 0\ncore id : 0\n\nprocessor : 1\nphysical id : 1\ncore id : 0\n";
        assert_eq!(physical_cores(two_sockets), Some(2));
        assert_eq!(physical_cores("processor : 0\n"), None);
    }
}
