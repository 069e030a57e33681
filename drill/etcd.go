package drill

import (
	"context"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/version"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// etcdVersion is the etcd release whose restore and server code this build
// links: the drill proves that this code opens the backup.
var etcdVersion = version.Version

// clientReader reads the embedded etcd through etcd's own client, over
// loopback, at one revision so that pages agree with each other.
type clientReader struct {
	c   *clientv3.Client
	rev int64
}

var _ Reader = (*clientReader)(nil)

// pageSize bounds the keys (and values) held at once.
const pageSize = 500

func newClientReader(ctx context.Context, endpoint string) (*clientReader, error) {
	c, err := clientv3.New(clientv3.Config{
		Endpoints: []string{endpoint}, DialTimeout: 10 * time.Second, Context: ctx, Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("connect to the restored etcd: %w", err)
	}
	return &clientReader{c: c}, nil
}

func (r *clientReader) Close() error { return r.c.Close() }

// revision reads the current revision and pins later reads to it.
func (r *clientReader) revision(ctx context.Context) (int64, error) {
	resp, err := r.c.Get(ctx, "\x00", clientv3.WithFromKey(), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	r.rev = resp.Header.Revision
	return r.rev, nil
}

// Range pages through the keys with prefix at the pinned revision.
func (r *clientReader) Range(ctx context.Context, prefix string, withValues bool, fn func(KV) error) error {
	start, end := prefix, clientv3.GetPrefixRangeEnd(prefix)
	if prefix == "" {
		start, end = "\x00", "\x00"
	}
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(pageSize), clientv3.WithRev(r.rev),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)}
		if !withValues {
			opts = append(opts, clientv3.WithKeysOnly())
		}
		resp, err := r.c.Get(ctx, start, opts...)
		if err != nil {
			return err
		}
		for _, kv := range resp.Kvs {
			if err := fn(KV{Key: kv.Key, Value: kv.Value}); err != nil {
				return err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		start = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}
