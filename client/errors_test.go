package client

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/basaltdb/basalt/proto/kvpb"
)

// blockingKV holds every Put until the test ends it.
type blockingKV struct {
	kvpb.UnimplementedKVServer
	arrived chan struct{}
}

func (b *blockingKV) Put(ctx context.Context, _ *kvpb.PutRequest) (*kvpb.PutResponse, error) {
	b.arrived <- struct{}{}
	<-ctx.Done()
	return nil, ctx.Err()
}

// A write lost with its connection may have been applied; only a failure
// to connect at all proves it was never sent. Both reach the caller as
// gRPC's Unavailable with "connection error" in the message, so notSent
// must tell them apart (mistaking the first for the second made the
// client send an applied put again).
func TestNotSentOnlyWhenNeverSent(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	kv := &blockingKV{arrived: make(chan struct{}, 1)}
	kvpb.RegisterKVServer(srv, kv)
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cli := kvpb.NewKVClient(conn)

	// Sent, then the server went away mid-call.
	errc := make(chan error, 1)
	go func() {
		_, err := cli.Put(context.Background(), &kvpb.PutRequest{Key: []byte("k")})
		errc <- err
	}()
	<-kv.arrived
	srv.Stop()
	<-served
	lost := <-errc
	if lost == nil {
		t.Fatal("the put succeeded on a stopped server")
	}
	if notSent(lost) {
		t.Fatalf("a put the server received counts as never sent: %v", lost)
	}

	// Nothing listens any more: the next call cannot connect.
	_, refused := cli.Put(context.Background(), &kvpb.PutRequest{Key: []byte("k")})
	if refused == nil {
		t.Fatal("a put succeeded with no server")
	}
	if !notSent(refused) {
		t.Fatalf("a put that could not connect does not count as never sent: %v", refused)
	}
}
