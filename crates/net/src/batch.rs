//! Batched UDP I/O: `recvmmsg` and `sendmmsg`, so a busy relay pays one system call per batch of
//! datagrams instead of one per datagram.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

use nix::sys::socket::{
    ControlMessage, MsgFlags, MultiHeaders, SockaddrLike, SockaddrStorage, recvmmsg, sendmmsg,
};

/// Datagrams per system call.
pub const BATCH: usize = 32;
/// Bytes per slot: any UDP datagram fits (65,507 bytes of IPv4 payload at most), so nothing a
/// client may legitimately send is cut. 32 slots make 2 MiB per receiving thread.
pub const SLOT: usize = 65_536;

/// Receives up to [`BATCH`] datagrams per call into preallocated slots.
pub struct RecvBatch {
    buf: Vec<u8>,
    received: Vec<Received>,
}

#[derive(Clone, Copy)]
struct Received {
    len: usize,
    from: Option<SocketAddr>,
    truncated: bool,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    /// Empty slots.
    pub fn new() -> Self {
        RecvBatch {
            buf: vec![0; BATCH * SLOT],
            received: Vec::with_capacity(BATCH),
        }
    }

    /// Reads what is queued on `socket` without blocking: the number of datagrams, or
    /// `WouldBlock` when there are none.
    pub fn recv(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        self.received.clear();
        // The kernel-facing headers hold raw pointers (not `Send`), so they live per call; two
        // small allocations per batch are noise next to the system call they save.
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        let mut slices: Vec<[IoSliceMut<'_>; 1]> = self
            .buf
            .chunks_mut(SLOT)
            .map(|slot| [IoSliceMut::new(slot)])
            .collect();
        let results = recvmmsg(
            socket.as_raw_fd(),
            &mut headers,
            slices.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )
        .map_err(io::Error::from)?;
        for message in results {
            self.received.push(Received {
                len: message.bytes,
                from: message.address.as_ref().and_then(to_socket_addr),
                truncated: message.flags.contains(MsgFlags::MSG_TRUNC),
            });
        }
        if self.received.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(self.received.len())
    }

    /// Datagram `i` of the last [`RecvBatch::recv`]: its bytes and sender, or `None` when it was
    /// truncated or has no usable address.
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        let r = self.received.get(i)?;
        if r.truncated {
            return None;
        }
        let start = i * SLOT;
        Some((&self.buf[start..start + r.len.min(SLOT)], r.from?))
    }
}

/// Datagrams waiting to be sent with one `sendmmsg` per socket.
#[derive(Default)]
pub struct SendBatch {
    data: Vec<u8>,
    /// (socket key, start, len, destination), in push order.
    entries: Vec<(SocketAddr, usize, usize, SocketAddr)>,
}

impl SendBatch {
    /// An empty batch.
    pub fn new() -> Self {
        SendBatch::default()
    }

    /// Queues `payload` for `to`, to be sent from the socket known as `via`.
    pub fn push(&mut self, via: SocketAddr, payload: &[u8], to: SocketAddr) {
        let start = self.data.len();
        self.data.extend_from_slice(payload);
        self.entries.push((via, start, payload.len(), to));
    }

    /// Datagrams queued.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sends everything, one `sendmmsg` per run of datagrams for the same socket; `socket_for`
    /// finds the socket of a `via` key. Datagrams the kernel will not take now are dropped, as a
    /// congested network would. Returns how many were sent.
    pub fn flush(&mut self, mut socket_for: impl FnMut(SocketAddr) -> Option<RawFd>) -> usize {
        let mut sent = 0;
        let mut start = 0;
        while start < self.entries.len() {
            let via = self.entries[start].0;
            let end = start
                + self.entries[start..]
                    .iter()
                    .take(BATCH)
                    .take_while(|e| e.0 == via)
                    .count();
            if let Some(fd) = socket_for(via) {
                sent += send_run(fd, &self.data, &self.entries[start..end]);
            }
            start = end;
        }
        self.data.clear();
        self.entries.clear();
        sent
    }
}

fn send_run(fd: RawFd, data: &[u8], run: &[(SocketAddr, usize, usize, SocketAddr)]) -> usize {
    let slices: Vec<[IoSlice<'_>; 1]> = run
        .iter()
        .map(|(_, start, len, _)| [IoSlice::new(&data[*start..*start + *len])])
        .collect();
    let addrs: Vec<Option<SockaddrStorage>> = run
        .iter()
        .map(|(_, _, _, to)| Some(SockaddrStorage::from(*to)))
        .collect();
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(run.len(), None);
    let cmsgs: [ControlMessage<'_>; 0] = [];
    match sendmmsg(
        fd,
        &mut headers,
        &slices,
        &addrs,
        cmsgs,
        MsgFlags::MSG_DONTWAIT,
    ) {
        Ok(results) => results.count(),
        Err(_) => 0,
    }
}

fn to_socket_addr(storage: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = storage.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    storage
        .as_sockaddr_in6()
        .map(|v6| SocketAddr::V6((*v6).into()))
        .filter(|_| storage.len() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_goes_out_and_comes_back_in_order() {
        let a = crate::bind_udp("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let b = crate::bind_udp("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let (a_addr, b_addr) = (a.local_addr().expect("addr"), b.local_addr().expect("addr"));
        let mut out = SendBatch::new();
        for i in 0..40u8 {
            out.push(a_addr, &[i; 100], b_addr);
        }
        assert_eq!(out.flush(|_| Some(a.as_raw_fd())), 40);
        assert!(out.is_empty());
        let mut batch = RecvBatch::new();
        let mut seen = Vec::new();
        while seen.len() < 40 {
            let n = batch.recv(&b).expect("datagrams are queued");
            for i in 0..n {
                let (data, from) = batch.get(i).expect("whole datagram");
                assert_eq!(from, a_addr);
                assert_eq!(data.len(), 100);
                seen.push(data[0]);
            }
        }
        assert_eq!(seen, (0..40).collect::<Vec<_>>());
        assert_eq!(
            batch.recv(&b).map_err(|e| e.kind()).err(),
            Some(io::ErrorKind::WouldBlock)
        );
    }

    #[test]
    fn the_largest_datagrams_arrive_whole() {
        let a = crate::bind_udp("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let b = crate::bind_udp("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let target = b.local_addr().expect("addr");
        a.send_to(&vec![7u8; 65_000], target).expect("send");
        a.send_to(&[8u8; 5000], target).expect("send");
        let mut batch = RecvBatch::new();
        let mut sizes = Vec::new();
        while sizes.len() < 2 {
            let n = batch.recv(&b).expect("queued");
            sizes.extend((0..n).map(|i| batch.get(i).expect("whole").0.len()));
        }
        assert_eq!(sizes, vec![65_000, 5000]);
    }
}
