package client

import (
	"errors"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// notSent reports a transport failure that happened before the request
// left this process (the connection could not be made): any request, a
// write too, may be sent again.
func notSent(err error) bool {
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
