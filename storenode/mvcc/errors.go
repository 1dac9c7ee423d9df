package mvcc

import "errors"

// Expected conditions, with etcd's messages where etcd has one (the etcd
// front end returns them as they are).
var (
	ErrCompacted     = errors.New("mvcc: required revision has been compacted")
	ErrFutureRev     = errors.New("mvcc: required revision is a future revision")
	ErrKeyNotFound   = errors.New("etcdserver: key not found")
	ErrEmptyKey      = errors.New("etcdserver: key is not provided")
	ErrKeyTooLarge   = errors.New("etcdserver: key is too large")
	ErrTooLarge      = errors.New("etcdserver: request is too large")
	ErrTooManyOps    = errors.New("etcdserver: too many operations in txn request")
	ErrDuplicateKey  = errors.New("etcdserver: duplicate key given in txn request")
	ErrBadRange      = errors.New("etcdserver: range end must be greater than the key")
	ErrLeaseNotFound = errors.New("etcdserver: requested lease not found")
	ErrValueProvided = errors.New("etcdserver: value is provided")
	ErrLeaseProvided = errors.New("etcdserver: lease is provided")
	// ErrRevisionOrder: a write's revision was not above the region's last
	// applied revision (two writes crossed between the TSO and the log).
	// Nothing was applied; the caller retries with a new revision.
	ErrRevisionOrder = errors.New("mvcc: revision is not above the region's last applied revision; retry")
)
