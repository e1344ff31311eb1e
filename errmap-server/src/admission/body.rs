//! The bodies admission hands on: the request replayed from what intake
//! read, and the response body that keeps a long-lived stream's place.

use super::*;

/// The request body handed on: what the intake read, then the rest.
pub(super) struct ReplayBody<B> {
    pub(super) data: Option<Bytes>,
    pub(super) rest: Option<B>,
    pub(super) trailers: Option<HeaderMap>,
}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(rest) = self.rest.as_mut() {
            match ready!(Pin::new(rest).poll_frame(cx)) {
                Some(frame) => return Poll::Ready(Some(frame)),
                None => self.rest = None,
            }
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
            && self.trailers.is_none()
            && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let buffered = self.data.as_ref().map_or(0, |d| d.remaining() as u64);
        match &self.rest {
            None => SizeHint::with_exact(buffered),
            Some(rest) => {
                let mut hint = SizeHint::new();
                hint.set_lower(buffered + rest.size_hint().lower());
                hint
            }
        }
    }
}

pin_project! {
    /// The response body of [`AdmissionService`]: the service's own body.
    /// A long-lived stream keeps its place until the body ends.
    pub struct AdmissionBody<B> {
        #[pin]
        pub(super) inner: B,
        pub(super) held: Option<Held>,
    }
}

impl<B: Default> Default for AdmissionBody<B> {
    fn default() -> Self {
        Self {
            inner: B::default(),
            held: None,
        }
    }
}

impl<B> Body for AdmissionBody<B>
where
    B: Body,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if frame.is_none() {
            this.held.take();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
