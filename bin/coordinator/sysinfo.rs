//! `coordinator sysinfo`: what the seed's `print_sysinfo` printed, for a Rust build —
//! so every benchmark result can say which machine and compiler made it. The machine is
//! read through the `sysinfo` crate (Linux, macOS, the BSDs, Windows), not from `/proc`.

use crate::cli::Format;
use crate::output::{SYSINFO_SCHEMA, cell, write_csv, write_json};
use serde::Serialize;
use std::io::{self, Write};
use sysinfo::{CpuRefreshKind, RefreshKind, System};

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
    /// Kernel name ("Linux", "Darwin"), as Python's `platform.system()`.
    pub system: String,
    /// Kernel release.
    pub release: String,
    /// The operating system by name and version ("Linux (Debian GNU/Linux 12)"), when known.
    pub os: Option<String>,
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

/// `coordinator sysinfo --format json`: the fields with their schema.
#[derive(Serialize)]
struct Document<'a> {
    schema: &'static str,
    #[serde(flatten)]
    info: &'a SysInfo,
}

impl SysInfo {
    /// Reads it off this machine.
    pub fn collect() -> SysInfo {
        let sys =
            System::new_with_specifics(RefreshKind::nothing().with_cpu(CpuRefreshKind::nothing()));
        let available = std::thread::available_parallelism().map_or(1, usize::from);
        let kernel = System::kernel_long_version();
        let processor = sys
            .cpus()
            .first()
            .map(|c| c.brand().trim().to_owned())
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| "unknown".into());
        SysInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            rustc: env!("COORDINATOR_RUSTC").to_owned(),
            target: env!("COORDINATOR_TARGET").to_owned(),
            profile: env!("COORDINATOR_PROFILE").to_owned(),
            system: kernel
                .split_whitespace()
                .next()
                .filter(|k| *k != "Unknown")
                .map_or_else(|| std::env::consts::OS.to_owned(), str::to_owned),
            release: System::kernel_version().unwrap_or_else(|| "unknown".into()),
            os: System::long_os_version(),
            machine: std::env::consts::ARCH.to_owned(),
            processor,
            logical_cores: match sys.cpus().len() {
                0 => available,
                n => n,
            },
            available_cores: available,
            physical_cores: System::physical_core_count(),
        }
    }

    /// Writes it as the seed did, one `name : value` per line; as JSON; or as CSV (a
    /// header and one row).
    pub fn write(&self, out: &mut dyn Write, format: Format) -> io::Result<()> {
        match format {
            Format::Json => write_json(
                out,
                &Document {
                    schema: SYSINFO_SCHEMA,
                    info: self,
                },
            ),
            Format::Csv => self.write_csv(out),
            Format::Table => self.write_table(out),
        }
    }

    fn write_table(&self, out: &mut dyn Write) -> io::Result<()> {
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
        if let Some(os) = &self.os {
            writeln!(out, "os              : {os}")?;
        }
        writeln!(out, "machine         : {}", self.machine)?;
        writeln!(out, "processor       : {}", self.processor)?;
        writeln!(
            out,
            "CPU count       : {} logical ({} available to this process), {physical} physical",
            self.logical_cores, self.available_cores
        )
    }

    fn write_csv(&self, out: &mut dyn Write) -> io::Result<()> {
        write_csv(
            out,
            &[
                "version",
                "rustc",
                "target",
                "profile",
                "system",
                "release",
                "os",
                "machine",
                "processor",
                "logical_cores",
                "available_cores",
                "physical_cores",
            ],
            [[
                self.version.clone(),
                self.rustc.clone(),
                self.target.clone(),
                self.profile.clone(),
                self.system.clone(),
                self.release.clone(),
                self.os.clone().unwrap_or_default(),
                self.machine.clone(),
                self.processor.clone(),
                self.logical_cores.to_string(),
                self.available_cores.to_string(),
                cell(self.physical_cores),
            ]],
        )
    }
}
