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

/// Accepts a queued connection on a non-blocking listening socket without blocking and without
/// io_uring: one `accept4` system call. `Ok(None)` when no connection is queued. The new socket
/// is non-blocking and close-on-exec; the peer address comes with it.
pub(crate) fn accept_nonblocking(
    listener: &socket2::Socket,
) -> std::io::Result<Option<(std::net::TcpStream, std::net::SocketAddr)>> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut storage = zeroed_storage();
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage` and `len` are valid and writable for the call, and `len` holds the
    // storage's size, so the kernel writes at most that many bytes of address.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            (&raw mut storage).cast(),
            &mut len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return if e.kind() == std::io::ErrorKind::WouldBlock { Ok(None) } else { Err(e) };
    }
    // SAFETY: accept4 returned a new, open socket descriptor that nothing else owns; the
    // TcpStream becomes its only owner and closes it on drop.
    let stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    let peer = from_storage(&storage).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "accepted a non-IP peer address")
    })?;
    Ok(Some((stream, peer)))
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

/// (soft, hard) RLIMIT_NOFILE.
pub(crate) fn nofile_limit() -> std::io::Result<(u64, u64)> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `r` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((r.rlim_cur, r.rlim_max))
}

/// Sets RLIMIT_NOFILE.
pub(crate) fn set_nofile_limit(soft: u64, hard: u64) -> std::io::Result<()> {
    let r = libc::rlimit { rlim_cur: soft as libc::rlim_t, rlim_max: hard as libc::rlim_t };
    // SAFETY: `r` is a valid rlimit read by the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
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

/// Sets up (and closes) a one-entry io_uring ring, to learn before any executor starts whether
/// this process may use io_uring at all (a seccomp filter, a kernel without it, or
/// `kernel.io_uring_disabled` refuse `io_uring_setup`).
pub(crate) fn probe_io_uring() -> std::io::Result<()> {
    // struct io_uring_params is 120 bytes of integers; all zero asks for defaults.
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup(2) reads and writes at most sizeof(struct io_uring_params) = 120
    // bytes at the pointer, which is valid and writable for the duration of the call.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the call returned a new file descriptor that nothing else owns; closing it once
    // releases the ring.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

/// Buffers for receiving up to `capacity` datagrams with one `recvmmsg` system call.
///
/// The kernel structures (`mmsghdr`, `iovec`) point into this struct's own heap vectors, set
/// once at construction; the vectors are never resized and nothing re-points the headers, so
/// they stay valid when the struct moves.
pub(crate) struct RecvBatch {
    slot: usize,
    bufs: Vec<u8>,
    lens: Vec<usize>,
    addrs: Vec<libc::sockaddr_storage>,
    iov: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch").field("capacity", &self.lens.len()).finish()
    }
}

fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain old data for which all-zero bytes are a valid value.
    unsafe { std::mem::zeroed() }
}

fn zeroed_hdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is plain old data (integers and raw pointers); all-zero is valid (null
    // pointers, zero lengths) and every pointer is set before the structure is used.
    unsafe { std::mem::zeroed() }
}

/// Decodes a kernel socket address.
fn from_storage(s: &libc::sockaddr_storage) -> Option<std::net::SocketAddr> {
    match libc::c_int::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in, which is smaller than
            // and alignment-compatible with sockaddr_storage.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(std::net::SocketAddr::from((ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(std::net::SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Encodes a socket address for the kernel; returns its length.
fn to_storage(addr: std::net::SocketAddr, s: &mut libc::sockaddr_storage) -> libc::socklen_t {
    *s = zeroed_storage();
    match addr {
        std::net::SocketAddr::V4(a) => {
            // SAFETY: sockaddr_in fits in (and is alignment-compatible with) sockaddr_storage.
            let sin =
                unsafe { &mut *(s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        std::net::SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 =
                unsafe { &mut *(s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

impl RecvBatch {
    /// Room for `capacity` datagrams of up to `slot` bytes each.
    pub(crate) fn new(capacity: usize, slot: usize) -> Self {
        let mut batch = Self {
            slot,
            bufs: vec![0; capacity * slot],
            lens: vec![0; capacity],
            addrs: vec![zeroed_storage(); capacity],
            iov: vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; capacity],
            hdrs: vec![zeroed_hdr(); capacity],
        };
        // The pointers target heap buffers that are never resized, so they stay valid when
        // the struct moves; `recv` only resets the fields the kernel writes.
        for i in 0..capacity {
            batch.iov[i] =
                libc::iovec { iov_base: batch.bufs[i * slot..].as_mut_ptr().cast(), iov_len: slot };
            batch.hdrs[i].msg_hdr.msg_name = (&raw mut batch.addrs[i]).cast();
            batch.hdrs[i].msg_hdr.msg_iov = &raw mut batch.iov[i];
            batch.hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        batch
    }

    /// Receives up to `capacity` datagrams without blocking. Returns how many arrived (0 when
    /// none is queued).
    pub(crate) fn recv(&mut self, fd: std::os::fd::RawFd) -> std::io::Result<usize> {
        let n = self.lens.len();
        for hdr in &mut self.hdrs {
            hdr.msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        }
        // SAFETY: `hdrs` holds `n` headers whose name and iovec pointers were set in `new` to
        // point into `addrs`, `iov` and `bufs` (heap buffers never resized since), with the real
        // lengths of those buffers; `send` restores them after using the same headers... it
        // does not: sending uses a separate batch (`new(_, 0)`), so these stay untouched.
        let got = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if got < 0 {
            let e = std::io::Error::last_os_error();
            return if e.kind() == std::io::ErrorKind::WouldBlock { Ok(0) } else { Err(e) };
        }
        let got = got as usize;
        for i in 0..got {
            // MSG_TRUNC in msg_flags marks a datagram longer than the slot.
            let truncated = self.hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            self.lens[i] = if truncated { self.slot + 1 } else { self.hdrs[i].msg_len as usize };
        }
        Ok(got)
    }

    /// Datagram `i` of the last `recv`: its bytes (`None` if it was truncated) and sender.
    pub(crate) fn datagram(&self, i: usize) -> (Option<&[u8]>, Option<std::net::SocketAddr>) {
        let len = self.lens[i];
        let bytes = (len <= self.slot).then(|| &self.bufs[i * self.slot..i * self.slot + len]);
        (bytes, from_storage(&self.addrs[i]))
    }
}

/// Headers for sending up to `capacity` datagrams with one `sendmmsg` system call.
pub(crate) struct SendBatch {
    addrs: Vec<libc::sockaddr_storage>,
    iov: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch").field("capacity", &self.hdrs.len()).finish()
    }
}

impl SendBatch {
    /// Room for `capacity` datagrams per call.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            addrs: vec![zeroed_storage(); capacity],
            iov: vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; capacity],
            hdrs: vec![zeroed_hdr(); capacity],
        }
    }

    /// Sends `items` (ranges of `out` to addresses) with one `sendmmsg`, without blocking.
    /// Returns how many were handed to the kernel (the rest: retry or drop).
    pub(crate) fn send(
        &mut self,
        fd: std::os::fd::RawFd,
        out: &[u8],
        items: &[(std::ops::Range<usize>, std::net::SocketAddr)],
    ) -> std::io::Result<usize> {
        let n = items.len().min(self.hdrs.len());
        for (i, (range, addr)) in items.iter().take(n).enumerate() {
            let len = to_storage(*addr, &mut self.addrs[i]);
            let bytes = &out[range.clone()];
            self.iov[i] =
                libc::iovec { iov_base: bytes.as_ptr().cast_mut().cast(), iov_len: bytes.len() };
            self.hdrs[i] = zeroed_hdr();
            self.hdrs[i].msg_hdr.msg_name = (&raw mut self.addrs[i]).cast();
            self.hdrs[i].msg_hdr.msg_namelen = len;
            self.hdrs[i].msg_hdr.msg_iov = &raw mut self.iov[i];
            self.hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        if n == 0 {
            return Ok(0);
        }
        // SAFETY: the first `n` headers point into `addrs`, `iov` and `out`, all alive and
        // unmoved during the call; the kernel only reads the iovec buffers (sendmmsg never
        // writes through them despite the `*mut` type).
        let sent = unsafe {
            libc::sendmmsg(fd, self.hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT)
        };
        if sent < 0 {
            let e = std::io::Error::last_os_error();
            return if e.kind() == std::io::ErrorKind::WouldBlock { Ok(0) } else { Err(e) };
        }
        Ok(sent as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn mmsg_round_trip_v4_and_v6() {
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            let server = std::net::UdpSocket::bind(bind).unwrap();
            let client = std::net::UdpSocket::bind(bind).unwrap();
            let to = server.local_addr().unwrap();
            for i in 0..3u8 {
                client.send_to(&[i; 5], to).unwrap();
            }
            client.send_to(&[9; 100], to).unwrap();
            let mut batch = RecvBatch::new(8, 16);
            let mut got = 0;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            let mut seen = Vec::new();
            while got < 4 && std::time::Instant::now() < deadline {
                let n = batch.recv(server.as_raw_fd()).unwrap();
                for i in 0..n {
                    let (bytes, from) = batch.datagram(i);
                    assert_eq!(from, Some(client.local_addr().unwrap()));
                    seen.push(bytes.map(<[u8]>::to_vec));
                }
                got += n;
            }
            assert_eq!(seen, vec![Some(vec![0; 5]), Some(vec![1; 5]), Some(vec![2; 5]), None]);
            let out = b"helloworld".to_vec();
            let me = client.local_addr().unwrap();
            let sent = SendBatch::new(4)
                .send(server.as_raw_fd(), &out, &[(0..5, me), (5..10, me)])
                .unwrap();
            assert_eq!(sent, 2);
            let mut buf = [0u8; 16];
            client.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
            assert_eq!(client.recv(&mut buf).unwrap(), 5);
            assert_eq!(&buf[..5], b"hello");
            assert_eq!(client.recv(&mut buf).unwrap(), 5);
            assert_eq!(&buf[..5], b"world");
        }
    }
}
