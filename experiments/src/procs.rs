//! The processes the harness runs and measures: killed on drop, their CPU time from `/proc`.

use std::process::Child;

use anyhow::Context;

/// A child process, killed (and reaped) on drop.
pub(crate) struct Killed(pub(crate) Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// utime + stime of a process, in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let (user, system) = cpu_split(pid)?;
    Ok(user + system)
}

/// (utime, stime) of a process, in seconds: its CPU time in user space and in the kernel.
pub(crate) fn cpu_split(pid: u32) -> anyhow::Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').context("malformed /proc stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11).context("no utime")?.parse()?;
    let stime: f64 = fields.get(12).context("no stime")?.parse()?;
    Ok((utime / ticks_per_second(), stime / ticks_per_second()))
}

/// `/proc/<pid>/stat` counts in USER_HZ ticks, which Linux fixes at 100 per second on every
/// architecture we run on (sysconf(_SC_CLK_TCK) reports the same constant).
pub(crate) fn ticks_per_second() -> f64 {
    100.0
}

/// CPU seconds of this process's reaped children so far (`cutime + cstime` of
/// `/proc/self/stat`): the leecher's, once it has been waited for.
pub(crate) fn children_cpu() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after = stat.rsplit_once(')').context("malformed /proc stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let cutime: f64 = fields.get(13).context("no cutime")?.parse()?;
    let cstime: f64 = fields.get(14).context("no cstime")?.parse()?;
    Ok((cutime + cstime) / ticks_per_second())
}
