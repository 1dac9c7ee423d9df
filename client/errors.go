package client

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// retryableTransport: the store could not be reached or is stopping; the
// request may be sent again (to a new leader).
func retryableTransport(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.Canceled:
		return true
	}
	return false
}
