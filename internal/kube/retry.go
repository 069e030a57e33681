package kube

import (
	"errors"
	"io"
	"net/http"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/rest"
)

// dialRetryWindow is how long a request keeps trying to reach an apiserver
// that refuses connections: long enough for an apiserver restart or a
// rolling update, short enough to fail clearly when it is gone.
const dialRetryWindow = 90 * time.Second

// WithDialRetry makes cfg's requests retry while the apiserver refuses the
// connection. A refused connection never carried the request, so retrying
// is safe for every method, writes and exec included; other errors are
// returned at once, since the request may have been carried out.
func WithDialRetry(cfg *rest.Config) *rest.Config {
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return dialRetry{next: rt, window: dialRetryWindow} })
	return cfg
}

type dialRetry struct {
	next   http.RoundTripper
	window time.Duration
}

func (d dialRetry) RoundTrip(req *http.Request) (*http.Response, error) {
	deadline := time.Now().Add(d.window)
	wait := 200 * time.Millisecond
	for {
		resp, err := d.next.RoundTrip(req)
		if err == nil || !utilnet.IsConnectionRefused(err) || time.Now().After(deadline) {
			return resp, err
		}
		if req.Body != nil && req.Body != http.NoBody {
			if req.GetBody == nil {
				return resp, err
			}
			body, gerr := req.GetBody()
			if gerr != nil {
				return resp, errors.Join(err, gerr)
			}
			req.Body = body
		}
		select {
		case <-req.Context().Done():
			return nil, req.Context().Err()
		case <-time.After(wait):
		}
		if wait < 3*time.Second {
			wait *= 2
		}
	}
}

// Transient reports whether err is a failure of the apiserver's availability
// (unreachable, restarting, overloaded) rather than an answer about the
// request: a wait may keep polling through it.
func Transient(err error) bool {
	if err == nil {
		return false
	}
	return utilnet.IsConnectionRefused(err) || utilnet.IsConnectionReset(err) || utilnet.IsProbableEOF(err) ||
		errors.Is(err, io.ErrUnexpectedEOF) || apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) ||
		apierrors.IsTooManyRequests(err) || apierrors.IsServiceUnavailable(err) || apierrors.IsInternalError(err) ||
		apierrors.IsUnexpectedServerError(err)
}
