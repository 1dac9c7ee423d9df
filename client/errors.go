package client

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// notSent reports a transport failure that happened before the request
// left this process (the connection could not be made): any request, a
// write too, may be sent again.
func notSent(err error) bool {
	var ns *notSentError
	if errors.As(err, &ns) {
		return true
	}
	s, ok := status.FromError(err)
	return ok && s.Code() == codes.Unavailable && strings.Contains(s.Message(), "connection error")
}

// retryableTransport: the store could not be reached or is stopping; a
// read may be sent again (to a new leader).
func retryableTransport(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.Canceled:
		return true
	}
	return false
}

// ErrGaveUp: a call kept meeting region errors or unreachable stores until
// the client's retry budget (Options.RetryBudget) ran out; the caller's own
// deadline had not passed.
var ErrGaveUp = errors.New("client: gave up retrying")

// GaveUpError is what a call returns when its retry budget ran out:
// errors.Is(err, ErrGaveUp) holds, and Last is the last attempt's error
// (a *region.Error, a gRPC status, ...). Last is not unwrapped on purpose:
// a region error about the region this call was routed to must not be
// taken by a caller that forwards the error (a store serving a lease
// revoke through the client) for one about its own request's region.
type GaveUpError struct {
	Budget time.Duration
	Last   error
}

func (e *GaveUpError) Error() string {
	return fmt.Sprintf("%v after %v (last error: %v)", ErrGaveUp, e.Budget, e.Last)
}

func (e *GaveUpError) Unwrap() error { return ErrGaveUp }
