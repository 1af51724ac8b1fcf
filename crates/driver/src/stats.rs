//! Resource usage of a task from procfs: CPU time and resident memory of the host process and
//! its workers, turned into Nomad's `TaskResourceUsage`.
//!
//! CPU percentages are computed over the interval between two samples, per process, as percent
//! of one core (so they may exceed 100). A sampler keeps only the previous sample of the pids it
//! saw last time: pids that went away are forgotten at the next sample, so polling for days does
//! not grow memory (the original leaked per poll, its issue #80). Each read opens and closes its
//! `/proc` file at once.

use std::collections::HashMap;
use std::time::Instant;

use nomad_plugin::proto::drivers::{
    CpuUsage, MemoryUsage, TaskResourceUsage, cpu_usage, memory_usage,
};

/// CPU times and memory of one process at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessSample {
    /// Start time (clock ticks after boot), to notice a reused pid.
    pub start_time: u64,
    /// User-mode CPU time in clock ticks.
    pub user_ticks: u64,
    /// Kernel-mode CPU time in clock ticks.
    pub system_ticks: u64,
    /// Resident set size in bytes.
    pub rss_bytes: u64,
}

/// Reads one process's sample; `None` when it is gone.
pub fn read_process(pid: u32) -> Option<ProcessSample> {
    let pid = i32::try_from(pid).ok().filter(|p| *p > 0)?;
    let stat = procfs::process::Process::new(pid).ok()?.stat().ok()?;
    Some(ProcessSample {
        start_time: stat.starttime,
        user_ticks: stat.utime,
        system_ticks: stat.stime,
        rss_bytes: stat.rss.saturating_mul(procfs::page_size()),
    })
}

/// Usage of one process (or the sum of several) over one interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// User-mode CPU, percent of one core.
    pub user_percent: f64,
    /// Kernel-mode CPU, percent of one core.
    pub system_percent: f64,
    /// Resident memory in bytes.
    pub rss_bytes: u64,
}

impl Usage {
    /// Total CPU, percent of one core.
    pub fn percent(&self) -> f64 {
        self.user_percent + self.system_percent
    }

    fn add(&mut self, other: &Usage) {
        self.user_percent += other.user_percent;
        self.system_percent += other.system_percent;
        self.rss_bytes += other.rss_bytes;
    }

    /// Nomad's message; `mhz_per_core` turns percent into `total_ticks` (MHz-ticks, as Nomad's
    /// executor reports them: percent of one core times that core's speed).
    pub fn to_proto(&self, mhz_per_core: f64) -> TaskResourceUsage {
        let percent = self.percent();
        TaskResourceUsage {
            cpu: Some(CpuUsage {
                system_mode: self.system_percent,
                user_mode: self.user_percent,
                total_ticks: percent / 100.0 * mhz_per_core,
                throttled_periods: 0,
                throttled_time: 0,
                percent,
                measured_fields: vec![
                    cpu_usage::Fields::SystemMode as i32,
                    cpu_usage::Fields::UserMode as i32,
                    cpu_usage::Fields::TotalTicks as i32,
                    cpu_usage::Fields::Percent as i32,
                ],
            }),
            memory: Some(MemoryUsage {
                rss: self.rss_bytes,
                measured_fields: vec![memory_usage::Fields::Rss as i32],
                ..MemoryUsage::default()
            }),
        }
    }
}

/// Turns successive samples of a set of pids into per-interval usage.
#[derive(Debug)]
pub struct Sampler {
    previous: HashMap<u32, ProcessSample>,
    previous_at: Instant,
    ticks_per_second: f64,
}

impl Default for Sampler {
    fn default() -> Self {
        Self::new()
    }
}

impl Sampler {
    /// A sampler with no history: the first [`Sampler::sample`] reports 0 % CPU.
    pub fn new() -> Self {
        Self {
            previous: HashMap::new(),
            previous_at: Instant::now(),
            ticks_per_second: procfs::ticks_per_second().max(1) as f64,
        }
    }

    /// Samples `pids` now: each live pid's usage since the previous sample, and their sum.
    /// A pid seen for the first time (or reused) counts 0 % CPU this once.
    pub fn sample(&mut self, pids: &[u32]) -> (Usage, Vec<(u32, Usage)>) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.previous_at).as_secs_f64();
        let mut current = HashMap::with_capacity(pids.len());
        let mut total = Usage::default();
        let mut by_pid = Vec::with_capacity(pids.len());
        for &pid in pids {
            if current.contains_key(&pid) {
                continue;
            }
            let Some(sample) = read_process(pid) else {
                continue;
            };
            let mut usage = Usage {
                rss_bytes: sample.rss_bytes,
                ..Usage::default()
            };
            if let Some(before) = self
                .previous
                .get(&pid)
                .filter(|b| b.start_time == sample.start_time)
                && elapsed > 0.0
            {
                let scale = 100.0 / self.ticks_per_second / elapsed;
                usage.user_percent =
                    sample.user_ticks.saturating_sub(before.user_ticks) as f64 * scale;
                usage.system_percent =
                    sample.system_ticks.saturating_sub(before.system_ticks) as f64 * scale;
            }
            total.add(&usage);
            by_pid.push((pid, usage));
            current.insert(pid, sample);
        }
        // Replacing the map drops every pid that was not seen this time.
        self.previous = current;
        self.previous_at = now;
        (total, by_pid)
    }
}

/// Average speed of one core in MHz from `/proc/cpuinfo` (`cpu MHz` lines), or 1000 when the
/// kernel does not report it (some virtual machines and ARM boards).
pub fn mhz_per_core() -> f64 {
    let Ok(text) = std::fs::read_to_string("/proc/cpuinfo") else {
        return 1000.0;
    };
    let speeds: Vec<f64> = text
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == "cpu MHz")
                .then(|| value.trim().parse::<f64>().ok())
                .flatten()
        })
        .collect();
    if speeds.is_empty() {
        1000.0
    } else {
        speeds.iter().sum::<f64>() / speeds.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_process_shows_cpu_and_memory() {
        let me = std::process::id();
        let mut sampler = Sampler::new();
        let (first, _) = sampler.sample(&[me]);
        assert_eq!(first.percent(), 0.0);
        assert!(first.rss_bytes > 0);
        // Burn CPU until the kernel has charged at least two ticks to this process.
        let start = read_process(me).unwrap();
        let mut x = 0u64;
        while read_process(me)
            .map(|s| s.user_ticks + s.system_ticks < start.user_ticks + start.system_ticks + 2)
            .unwrap_or(false)
        {
            for i in 0..100_000u64 {
                x = x.wrapping_add(i * i);
            }
        }
        std::hint::black_box(x);
        let (total, by_pid) = sampler.sample(&[me, me]);
        assert_eq!(by_pid.len(), 1, "duplicate pids are counted once");
        assert!(total.percent() > 0.0);
        let proto = total.to_proto(2000.0);
        let cpu = proto.cpu.unwrap();
        assert_eq!(cpu.measured_fields.len(), 4);
        assert!((cpu.percent - (cpu.user_mode + cpu.system_mode)).abs() < 1e-9);
        assert!((cpu.total_ticks - cpu.percent / 100.0 * 2000.0).abs() < 1e-9);
        let memory = proto.memory.unwrap();
        assert_eq!(
            memory.measured_fields,
            vec![memory_usage::Fields::Rss as i32]
        );
        assert!(memory.rss > 0);
    }

    #[test]
    fn vanished_pids_are_forgotten() {
        let mut child = std::process::Command::new("/bin/true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let mut sampler = Sampler::new();
        sampler.sample(&[std::process::id(), pid]);
        assert_eq!(sampler.previous.len(), 1);
        sampler.sample(&[]);
        assert!(sampler.previous.is_empty());
    }

    #[test]
    fn core_speed_is_positive() {
        assert!(mhz_per_core() > 0.0);
    }
}
