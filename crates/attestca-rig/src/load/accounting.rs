//! CPU accounting of other processes over the measured window: the CA, PostgreSQL, whatever
//! shares the machine (`--account NAME=PID[,PID…]` or `--account NAME=comm:COMMAND`), and the
//! whole machine's busy share. Throughput on a shared machine moves by ±20 % from run to run;
//! CPU per operation, measured over exactly the window, moves much less — it is the figure to
//! compare builds by.
//!
//! Read from `/proc` (Linux); elsewhere the report has no process figures.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Serialize;

/// One accounted group of processes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub processes: Processes,
}

/// Which processes a group is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Processes {
    /// These process ids.
    Pids(Vec<u32>),
    /// Every process whose command name (`/proc/<pid>/comm`) is this, looked up at each
    /// reading (PostgreSQL starts backends during a run).
    Command(String),
}

impl std::str::FromStr for Account {
    type Err = String;

    /// `NAME=PID[,PID…]` or `NAME=comm:COMMAND`.
    fn from_str(text: &str) -> Result<Self, String> {
        let (name, what) = text
            .split_once('=')
            .filter(|(name, what)| !name.is_empty() && !what.is_empty())
            .ok_or_else(|| {
                format!("--account {text:?}: give NAME=PID[,PID…] or NAME=comm:COMMAND")
            })?;
        let processes = match what.strip_prefix("comm:") {
            Some(command) => Processes::Command(command.to_owned()),
            None => Processes::Pids(
                what.split(',')
                    .map(|pid| {
                        pid.trim()
                            .parse()
                            .map_err(|_| format!("--account {text:?}: {pid:?} is not a process id"))
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        Ok(Self {
            name: name.to_owned(),
            processes,
        })
    }
}

static ACCOUNTS: OnceLock<Vec<Account>> = OnceLock::new();

/// The groups every measured window of this run accounts (set once, from the command line).
pub fn set(accounts: Vec<Account>) {
    let _ = ACCOUNTS.set(accounts);
}

/// CPU of one group over the window.
#[derive(Clone, Debug, Serialize)]
pub struct ProcessCpu {
    pub cpu_seconds: f64,
    /// CPU milliseconds per successful operation of the window.
    pub ms_per_operation: f64,
}

/// The whole machine over the window (`/proc/stat`).
#[derive(Clone, Debug, Serialize)]
pub struct MachineCpu {
    /// Busy share of all cores (1.0 = every core busy the whole window).
    pub busy_share: f64,
    /// Busy CPU milliseconds per successful operation, everything on the machine included.
    pub busy_ms_per_operation: f64,
}

/// A reading at the window's start.
#[derive(Clone, Debug, Default)]
pub struct Reading {
    groups: BTreeMap<String, f64>,
    /// (busy, total) seconds of all cores.
    machine: Option<(f64, f64)>,
}

/// Reads every group and the machine now.
pub fn read() -> Reading {
    let groups = ACCOUNTS
        .get()
        .map(|accounts| {
            accounts
                .iter()
                .map(|a| (a.name.clone(), group_cpu_seconds(&a.processes)))
                .collect()
        })
        .unwrap_or_default();
    Reading {
        groups,
        machine: machine_seconds(),
    }
}

/// The figures since `before`, per `operations` successful operations.
pub fn since(
    before: &Reading,
    operations: u64,
) -> (BTreeMap<String, ProcessCpu>, Option<MachineCpu>) {
    let now = read();
    let per = |seconds: f64| seconds * 1000.0 / operations.max(1) as f64;
    let groups = now
        .groups
        .iter()
        .map(|(name, after)| {
            let seconds = (after - before.groups.get(name).copied().unwrap_or(0.0)).max(0.0);
            (
                name.clone(),
                ProcessCpu {
                    cpu_seconds: seconds,
                    ms_per_operation: per(seconds),
                },
            )
        })
        .collect();
    let machine = match (before.machine, now.machine) {
        (Some((busy0, total0)), Some((busy1, total1))) if total1 > total0 => Some(MachineCpu {
            busy_share: (busy1 - busy0) / (total1 - total0),
            busy_ms_per_operation: per(busy1 - busy0),
        }),
        _ => None,
    };
    (groups, machine)
}

/// Clock ticks per second for `/proc` times (USER_HZ: 100 on every Linux ABI that matters).
const TICKS_PER_SECOND: f64 = 100.0;

fn group_cpu_seconds(processes: &Processes) -> f64 {
    let pids: Vec<u32> = match processes {
        Processes::Pids(pids) => pids.clone(),
        Processes::Command(command) => pids_of(command),
    };
    pids.iter()
        .filter_map(|pid| process_cpu_seconds(*pid))
        .sum()
}

/// utime + stime of a process (fields 14 and 15 of `/proc/<pid>/stat`), in seconds.
fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: fields start after ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

fn pids_of(command: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter(|pid| {
                    std::fs::read_to_string(format!("/proc/{pid}/comm"))
                        .is_ok_and(|c| c.trim_end() == command)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// (busy, total) seconds of all cores since boot, from the first line of `/proc/stat`.
fn machine_seconds() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<f64> = line
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0.0);
    let total: f64 = ticks.iter().take(8).sum();
    Some(((total - idle) / TICKS_PER_SECOND, total / TICKS_PER_SECOND))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_parse_pids_and_commands() {
        assert_eq!(
            "ca=12,13".parse::<Account>(),
            Ok(Account {
                name: "ca".into(),
                processes: Processes::Pids(vec![12, 13])
            })
        );
        assert_eq!(
            "db=comm:postgres".parse::<Account>(),
            Ok(Account {
                name: "db".into(),
                processes: Processes::Command("postgres".into())
            })
        );
        for bad in ["", "ca", "=1", "ca=", "ca=x", "ca=1,,2"] {
            assert!(bad.parse::<Account>().is_err(), "{bad:?}");
        }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn this_process_and_the_machine_are_read() {
        let me = process_cpu_seconds(std::process::id()).expect("own /proc/self/stat");
        // Burn a little CPU: the reading moves.
        let mut x = 0u64;
        for i in 0..30_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        let after = process_cpu_seconds(std::process::id()).expect("stat");
        assert!(after > me, "{me} -> {after}");
        let (busy, total) = machine_seconds().expect("/proc/stat");
        assert!(busy > 0.0 && total >= busy);
        assert!(pids_of("no-such-command-here").is_empty());
    }
}
