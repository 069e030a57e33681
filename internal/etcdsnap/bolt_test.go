package etcdsnap

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"strings"
	"testing"
)

// The tests here build bbolt databases page by page, to reach cases a real
// etcd does not produce on demand (a stale page, a damaged meta page, an empty
// leaf); bolt_e2e_test.go checks the Scanner against etcdutl on real ones.

const testPageSize = 4096

type leafElem struct {
	flags uint32
	key   []byte
	value []byte
}

type branchElem struct {
	key   []byte
	child uint64
}

// page lays out a branch or leaf page as bbolt writes it: the header, the
// elements, then each element's key (and value), with overflow pages when
// it does not fit in one page. An id of 0 gives an inline page.
func leafPage(id uint64, elems ...leafElem) []byte {
	return buildPage(id, leafPageFlag, len(elems), func(i int) ([]byte, []byte, uint64, uint32) {
		return elems[i].key, elems[i].value, 0, elems[i].flags
	})
}

func branchPage(id uint64, elems ...branchElem) []byte {
	return buildPage(id, branchPageFlag, len(elems), func(i int) ([]byte, []byte, uint64, uint32) {
		return elems[i].key, nil, elems[i].child, 0
	})
}

func buildPage(id uint64, flags uint16, n int, elem func(int) ([]byte, []byte, uint64, uint32)) []byte {
	le := binary.LittleEndian
	b := make([]byte, pageHeaderSize+n*elementSize)
	le.PutUint64(b, id)
	le.PutUint16(b[8:], flags)
	le.PutUint16(b[10:], uint16(n))
	for i := range n {
		k, v, child, f := elem(i)
		at := pageHeaderSize + i*elementSize
		pos := uint32(len(b) - at)
		if flags == branchPageFlag {
			le.PutUint32(b[at:], pos)
			le.PutUint32(b[at+4:], uint32(len(k)))
			le.PutUint64(b[at+8:], child)
		} else {
			le.PutUint32(b[at:], f)
			le.PutUint32(b[at+4:], pos)
			le.PutUint32(b[at+8:], uint32(len(k)))
			le.PutUint32(b[at+12:], uint32(len(v)))
		}
		b = append(b, k...)
		b = append(b, v...)
	}
	if id == 0 {
		return b
	}
	pages := (len(b) + testPageSize - 1) / testPageSize
	le.PutUint32(b[12:], uint32(pages-1))
	return append(b, make([]byte, pages*testPageSize-len(b))...)
}

func metaPage(id, root, pgid, txid uint64) []byte {
	le := binary.LittleEndian
	b := make([]byte, testPageSize)
	le.PutUint64(b, id)
	le.PutUint16(b[8:], 0x04)
	m := b[pageHeaderSize:]
	le.PutUint32(m[0:], boltMagic)
	le.PutUint32(m[4:], boltVersion)
	le.PutUint32(m[8:], testPageSize)
	le.PutUint64(m[16:], root)
	le.PutUint64(m[32:], 0xffffffffffffffff) // no freelist, as etcd syncs none
	le.PutUint64(m[40:], pgid)
	le.PutUint64(m[48:], txid)
	h := fnv.New64a()
	h.Write(m[:metaSumLen])
	le.PutUint64(m[metaSumLen:], h.Sum64())
	return b
}

// bucketValue is a bucket's leaf value: its root page, or its inline page.
func bucketValue(root uint64, inline []byte) []byte {
	b := make([]byte, bucketHeaderLen)
	binary.LittleEndian.PutUint64(b, root)
	return append(b, inline...)
}

func revKey(main, sub uint64, tombstone bool) []byte {
	b := binary.BigEndian.AppendUint64(nil, main)
	b = append(b, '_')
	b = binary.BigEndian.AppendUint64(b, sub)
	if tombstone {
		b = append(b, 't')
	}
	return b
}

// database assembles pages (by id) into a file of npages pages, followed by
// etcd's SHA-256.
func database(npages int, pages map[uint64][]byte) []byte {
	db := make([]byte, npages*testPageSize)
	for id, p := range pages {
		copy(db[int(id)*testPageSize:], p)
	}
	sum := sha256.Sum256(db)
	return append(db, sum[:]...)
}

// etcdDB is a small etcd-shaped database: root bucket at page 2 with an
// inline "meta" bucket holding version, and the "key" bucket given.
func etcdDB(npages int, keyBucket []byte, version string, extra map[uint64][]byte) []byte {
	var metaElems []leafElem
	if version != "" {
		metaElems = append(metaElems, leafElem{key: []byte("storageVersion"), value: []byte(version)})
	}
	metaElems = append(metaElems, leafElem{key: []byte("consistent_index"), value: make([]byte, 8)})
	// Keys in order: "consistent_index" < "storageVersion".
	metaElems[0], metaElems[len(metaElems)-1] = metaElems[len(metaElems)-1], metaElems[0]
	pages := map[uint64][]byte{
		0: metaPage(0, 2, uint64(npages), 10),
		1: metaPage(1, 2, uint64(npages), 9),
		2: leafPage(2,
			leafElem{bucketLeafFlag, []byte("key"), keyBucket},
			leafElem{bucketLeafFlag, []byte("meta"), bucketValue(0, leafPage(0, metaElems...))},
		),
	}
	for id, p := range extra {
		pages[id] = p
	}
	return database(npages, pages)
}

func scanBytes(t testing.TB, db []byte, chunk int) (Status, error) {
	t.Helper()
	s := NewScanner()
	for off := 0; off < len(db); off += chunk {
		if _, err := s.Write(db[off:min(len(db), off+chunk)]); err != nil {
			return Status{}, err
		}
	}
	return s.Status(bytesReadAt(db))
}

func bytesReadAt(db []byte) func(off, n int64) ([]byte, error) {
	return func(off, n int64) ([]byte, error) {
		if off < 0 || n < 0 || off+n > int64(len(db)) {
			return nil, io.ErrUnexpectedEOF
		}
		return db[off : off+n], nil
	}
}

func TestScanner(t *testing.T) {
	inlineKeys := bucketValue(0, leafPage(0,
		leafElem{0, revKey(5, 0, false), []byte("a")},
		leafElem{0, revKey(7, 1, true), []byte("b")},
	))
	twoLevels := map[uint64][]byte{
		3: branchPage(3, branchElem{revKey(2, 0, false), 4}, branchElem{revKey(40, 0, false), 5}),
		4: leafPage(4, leafElem{0, revKey(2, 0, false), []byte("x")}),
		5: leafPage(5, leafElem{0, revKey(40, 0, false), []byte("y")}, leafElem{0, revKey(41, 3, false), bytes.Repeat([]byte("z"), 9000)}),
		// A stale leaf with a higher revision, reachable from no meta page.
		9: leafPage(9, leafElem{0, revKey(999, 0, false), []byte("stale")}),
	}
	emptyLast := map[uint64][]byte{
		3: branchPage(3, branchElem{revKey(2, 0, false), 4}, branchElem{revKey(40, 0, false), 5}),
		4: leafPage(4, leafElem{0, revKey(2, 0, false), []byte("x")}, leafElem{0, revKey(12, 0, false), []byte("x")}),
		5: leafPage(5),
	}
	withMetas := func(db []byte, m0, m1 []byte) []byte {
		db = bytes.Clone(db)
		copy(db, m0)
		copy(db[testPageSize:], m1)
		return db
	}
	base := etcdDB(12, bucketValue(3, nil), "3.6.0", twoLevels)
	// meta 1 newer and pointing at another root whose key bucket is inline.
	otherRoot := leafPage(10,
		leafElem{bucketLeafFlag, []byte("key"), inlineKeys},
		leafElem{bucketLeafFlag, []byte("meta"), bucketValue(0, leafPage(0))},
	)
	newerMeta1 := withMetas(base, metaPage(0, 2, 12, 10), metaPage(1, 10, 12, 11))
	copy(newerMeta1[10*testPageSize:], otherRoot)
	badNewer := bytes.Clone(newerMeta1)
	badNewer[testPageSize+pageHeaderSize+20] ^= 1 // meta 1's checksum fails

	tests := []struct {
		name    string
		db      []byte
		want    Status
		wantErr string
	}{
		{name: "inline key bucket", db: etcdDB(4, inlineKeys, "3.6.0", nil), want: Status{Revision: 7, TotalSize: 4 * testPageSize, Version: "3.6.0"}},
		{name: "empty inline key bucket", db: etcdDB(4, bucketValue(0, leafPage(0)), "", nil), want: Status{TotalSize: 4 * testPageSize}},
		{name: "two levels, overflow, stale page", db: base, want: Status{Revision: 41, TotalSize: 12 * testPageSize, Version: "3.6.0"}},
		{name: "rightmost leaf empty", db: etcdDB(8, bucketValue(3, nil), "3.6", emptyLast), want: Status{Revision: 12, TotalSize: 8 * testPageSize}},
		{name: "newer meta 1 wins", db: newerMeta1, want: Status{Revision: 7, TotalSize: 12 * testPageSize}},
		{name: "invalid newer meta loses", db: badNewer, want: Status{Revision: 41, TotalSize: 12 * testPageSize, Version: "3.6.0"}},
		{name: "no key bucket", db: database(4, map[uint64][]byte{
			0: metaPage(0, 2, 4, 1), 1: metaPage(1, 2, 4, 0),
			2: leafPage(2, leafElem{bucketLeafFlag, []byte("meta"), bucketValue(0, leafPage(0))}),
		}), want: Status{TotalSize: 4 * testPageSize}},
		{name: "no meta bucket", db: database(4, map[uint64][]byte{
			0: metaPage(0, 2, 4, 1), 1: metaPage(1, 2, 4, 0), 2: leafPage(2),
		}), wantErr: `no "meta" bucket`},
		{name: "short revision key", db: etcdDB(4, bucketValue(0, leafPage(0, leafElem{0, []byte("12345678_"), nil})), "", nil), wantErr: "not a revision"},
		{name: "not bbolt", db: bytes.Repeat([]byte("etcd"), 300_000), wantErr: "not a bbolt database"},
		{name: "empty stream", db: nil, wantErr: "not a bbolt database"},
		{name: "truncated", db: base[:11*testPageSize], wantErr: "truncated"},
		{name: "root page out of bounds", db: database(4, map[uint64][]byte{0: metaPage(0, 7, 4, 1), 1: metaPage(1, 7, 4, 0)}), wantErr: "root page 7"},
		{name: "root is a meta page", db: database(4, map[uint64][]byte{0: metaPage(0, 2, 4, 1), 1: metaPage(1, 2, 4, 0), 2: metaPage(2, 2, 4, 0)}), wantErr: "not a branch or leaf page"},
		{name: "child page of another id", db: etcdDB(12, bucketValue(3, nil), "", map[uint64][]byte{
			3: branchPage(3, branchElem{revKey(2, 0, false), 9}), 9: leafPage(8),
		}), wantErr: "says it is page 8"},
		{name: "child loops to its parent", db: etcdDB(12, bucketValue(3, nil), "", map[uint64][]byte{
			3: branchPage(3, branchElem{revKey(2, 0, false), 3}),
		}), wantErr: "deeper than bbolt writes"},
	}
	for _, tt := range tests {
		for _, chunk := range []int{1, 4095, 64 << 10} {
			if chunk == 1 && len(tt.db) > 100_000 {
				continue
			}
			t.Run(fmt.Sprintf("%s/chunks of %d", tt.name, chunk), func(t *testing.T) {
				got, err := scanBytes(t, tt.db, chunk)
				if tt.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
						t.Fatalf("error %v, want %q", err, tt.wantErr)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if got != tt.want {
					t.Errorf("status %+v, want %+v", got, tt.want)
				}
			})
		}
	}
}

func TestSemverString(t *testing.T) {
	// go-semver's NewVersion and String (github.com/coreos/go-semver v0.3.1).
	for in, want := range map[string]string{
		"3.6.0":            "3.6.0",
		"3.7.1-rc.1+build": "3.7.1-rc.1+build",
		"03.6.00":          "3.6.0",
		"+3.6.0":           "",
		"3.6":              "",
		"3.6.0.1":          "",
		"3.6.x":            "",
		"3.6.0-":           "3.6.0",
		"3.6.0-a..b":       "",
		"3.6.0+a_b":        "",
		"":                 "",
	} {
		if got := semverString([]byte(in)); got != want {
			t.Errorf("semverString(%q) = %q, want %q", in, got, want)
		}
	}
}
