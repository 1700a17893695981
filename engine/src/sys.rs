//! The few calls that need `unsafe`: adopting a listening socket into glommio and reading or
//! raising RLIMIT_MEMLOCK.

use std::os::fd::IntoRawFd;

use glommio::net::TcpListener;

/// Hands a bound, listening socket to the current glommio executor.
pub(crate) fn adopt_listener(socket: socket2::Socket) -> TcpListener {
    let fd = socket.into_raw_fd();
    // SAFETY: `into_raw_fd` transferred sole ownership of an open, bound, listening TCP socket;
    // the TcpListener becomes its only owner and closes it on drop.
    unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }
}

/// (soft, hard) RLIMIT_MEMLOCK in bytes (`u64::MAX` for unlimited).
pub(crate) fn memlock_limit() -> std::io::Result<(u64, u64)> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `r` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((r.rlim_cur, r.rlim_max))
}

/// Sets RLIMIT_MEMLOCK.
pub(crate) fn set_memlock_limit(soft: u64, hard: u64) -> std::io::Result<()> {
    let r = libc::rlimit { rlim_cur: soft as libc::rlim_t, rlim_max: hard as libc::rlim_t };
    // SAFETY: `r` is a valid rlimit read by the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &r) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
