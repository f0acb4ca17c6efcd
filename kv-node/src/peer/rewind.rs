//! A connection with bytes already read from it put back in front: what
//! hyper had buffered past the request when it handed a connection over.

use bytes::{Buf, Bytes};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Reads `unread` first, then `io`; writes go straight to `io`.
pub struct Rewind<T> {
    unread: Bytes,
    io: T,
}

impl<T> Rewind<T> {
    pub fn new(unread: Bytes, io: T) -> Rewind<T> {
        Rewind { unread, io }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.unread.has_remaining() {
            let n = self.unread.len().min(buf.remaining());
            buf.put_slice(&self.unread[..n]);
            self.unread.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn the_unread_bytes_come_first_then_the_connection() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut io = Rewind::new(Bytes::from_static(b"hel"), near);
        far.write_all(b"lo").await.unwrap();
        let mut read = [0u8; 5];
        io.read_exact(&mut read).await.unwrap();
        assert_eq!(&read, b"hello");
        io.write_all(b"back").await.unwrap();
        let mut back = [0u8; 4];
        far.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"back");
    }

    #[tokio::test]
    async fn a_small_read_buffer_takes_the_unread_bytes_in_parts() {
        let (near, _far) = tokio::io::duplex(64);
        let mut io = Rewind::new(Bytes::from_static(b"abcdef"), near);
        let mut part = [0u8; 4];
        let n = io.read(&mut part).await.unwrap();
        assert_eq!(&part[..n], b"abcd");
        let n = io.read(&mut part).await.unwrap();
        assert_eq!(&part[..n], b"ef");
    }
}
