package etcdsnap

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"runtime"
	"slices"
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
	return filePages(npages, pages)
}

// filePages assembles pages into a file of n pages and etcd's SHA-256.
func filePages(n int, pages map[uint64][]byte) []byte {
	db := make([]byte, n*testPageSize)
	for id, p := range pages {
		copy(db[int(id)*testPageSize:], p)
	}
	sum := sha256.Sum256(db)
	return append(db, sum[:]...)
}

// etcdDB is a small etcd-shaped database: root bucket at page 2 with an
// inline "meta" bucket holding version, and the "key" bucket given.
func etcdDB(npages int, keyBucket []byte, version string, extra map[uint64][]byte) []byte {
	return etcdDBPrefix(npages, npages, keyBucket, version, extra)
}

// etcdDBPrefix is the first n pages of a database of npages pages (the rest
// free), and a SHA-256 that is not the database's.
func etcdDBPrefix(npages, n int, keyBucket []byte, version string, extra map[uint64][]byte) []byte {
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
	return filePages(n, pages)
}

// scanBytes streams db through a Scanner in chunks, then takes its status
// reading from stored (db itself when nil).
func scanBytes(t testing.TB, db, stored []byte, chunk int) (Status, error) {
	t.Helper()
	s := NewScanner()
	for off := 0; off < len(db); off += chunk {
		if _, err := s.Write(db[off:min(len(db), off+chunk)]); err != nil {
			return Status{}, err
		}
	}
	if stored == nil {
		stored = db
	}
	return s.Status(bytesReadAt(stored))
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

	badMeta0 := bytes.Clone(base)
	badMeta0[pageHeaderSize+20] ^= 1 // meta 0's checksum fails: page size from meta 1

	tests := []struct {
		name    string
		db      []byte
		stored  []byte // the object Status reads, when not db
		want    Status
		wantErr string
	}{
		{name: "inline key bucket", db: etcdDB(4, inlineKeys, "3.6.0", nil), want: Status{Revision: 7, TotalSize: 4 * testPageSize, Version: "3.6.0"}},
		{name: "empty inline key bucket", db: etcdDB(4, bucketValue(0, leafPage(0)), "", nil), want: Status{TotalSize: 4 * testPageSize}},
		{name: "two levels, overflow, stale page", db: base, want: Status{Revision: 41, TotalSize: 12 * testPageSize, Version: "3.6.0"}},
		{name: "rightmost leaf empty", db: etcdDB(8, bucketValue(3, nil), "3.6", emptyLast), want: Status{Revision: 12, TotalSize: 8 * testPageSize}},
		{name: "newer meta 1 wins", db: newerMeta1, want: Status{Revision: 7, TotalSize: 12 * testPageSize}},
		{name: "invalid newer meta loses", db: badNewer, want: Status{Revision: 41, TotalSize: 12 * testPageSize, Version: "3.6.0"}},
		{name: "invalid meta 0", db: badMeta0, want: Status{Revision: 41, TotalSize: 12 * testPageSize, Version: "3.6.0"}},
		{name: "no key bucket", db: database(4, map[uint64][]byte{
			0: metaPage(0, 2, 4, 1), 1: metaPage(1, 2, 4, 0),
			2: leafPage(2, leafElem{bucketLeafFlag, []byte("meta"), bucketValue(0, leafPage(0))}),
		}), want: Status{TotalSize: 4 * testPageSize}},
		{name: "no meta bucket", db: database(4, map[uint64][]byte{
			0: metaPage(0, 2, 4, 1), 1: metaPage(1, 2, 4, 0), 2: leafPage(2),
		}), wantErr: `no "meta" bucket`},
		{name: "short revision key", db: etcdDB(4, bucketValue(0, leafPage(0, leafElem{0, []byte("12345678_"), nil})), "", nil), wantErr: "not a revision"},
		{name: "stored object of another transaction", db: base, stored: withMetas(base, metaPage(0, 2, 12, 12), metaPage(1, 2, 12, 11)), wantErr: "not the one streamed"},
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
				got, err := scanBytes(t, tt.db, tt.stored, chunk)
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

// bigStream is an etcd-shaped database of size bytes: a two-level "key"
// bucket in its first pages, then free pages. It is generated as it is read,
// so that only the Scanner's own memory shows in measurements.
type bigStream struct {
	prefix []byte
	size   int64
}

func newBigStream(size int64) bigStream {
	npages := int(size / testPageSize)
	return bigStream{size: size, prefix: etcdDBPrefix(npages, 8, bucketValue(3, nil), "3.6.0", map[uint64][]byte{
		3: branchPage(3, branchElem{revKey(2, 0, false), 4}, branchElem{revKey(40, 0, false), 5}),
		4: leafPage(4, leafElem{0, revKey(2, 0, false), []byte("x")}),
		5: leafPage(5, leafElem{0, revKey(40, 0, false), []byte("y")}, leafElem{0, revKey(uint64(size), 1, false), nil}),
	})[:8*testPageSize]}
}

// scan writes the stream to s in chunks of buf's size.
func (b bigStream) scan(s *Scanner, buf []byte) error {
	for off := int64(0); off < b.size+sha256.Size; off += int64(len(buf)) {
		n := min(int64(len(buf)), b.size+sha256.Size-off)
		chunk := buf[:n]
		clear(chunk)
		if off < int64(len(b.prefix)) {
			copy(chunk, b.prefix[off:])
		}
		if _, err := s.Write(chunk); err != nil {
			return err
		}
	}
	return nil
}

func (b bigStream) readAt(off, n int64) ([]byte, error) {
	if off < 0 || n < 0 || off+n > b.size {
		return nil, io.ErrUnexpectedEOF
	}
	out := make([]byte, n)
	if off < int64(len(b.prefix)) {
		copy(out, b.prefix[off:])
	}
	return out, nil
}

func (b bigStream) status(t testing.TB, buf []byte) *Scanner {
	t.Helper()
	s := NewScanner()
	if err := b.scan(s, buf); err != nil {
		t.Fatal(err)
	}
	st, err := s.Status(b.readAt)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Status{Revision: b.size, TotalSize: b.size, Version: "3.6.0"}); st != want {
		t.Fatalf("status %+v, want %+v", st, want)
	}
	return s
}

// TestScannerMemoryFlat checks that what a Scanner keeps, and what it
// allocates, is the same for a 4 MiB and a 64 MiB database.
func TestScannerMemoryFlat(t *testing.T) {
	small, big := newBigStream(4<<20), newBigStream(64<<20)
	buf := make([]byte, 64<<10)
	// What stays live with the Scanner after the scan: the heap with it,
	// minus the heap once it is dropped; the median of five.
	heap := func() int64 {
		var m runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m)
		return int64(m.HeapAlloc)
	}
	retained := func(b bigStream) int64 {
		var r []int64
		for range 5 {
			s := b.status(t, buf)
			with := heap()
			runtime.KeepAlive(s)
			r = append(r, with-heap())
		}
		slices.Sort(r)
		return r[2]
	}
	rs, rb := retained(small), retained(big)
	t.Logf("retained after 4 MiB: %d bytes, after 64 MiB: %d bytes", rs, rb)
	if rb > 16<<10 || rb-rs > 2<<10 {
		t.Errorf("a Scanner keeps %d bytes after 64 MiB, %d after 4 MiB: want the same few bytes", rb, rs)
	}
	as := testing.AllocsPerRun(3, func() { small.status(t, buf) })
	ab := testing.AllocsPerRun(3, func() { big.status(t, buf) })
	t.Logf("allocations for 4 MiB: %v, for 64 MiB: %v", as, ab)
	if as != ab {
		t.Errorf("%v allocations for 4 MiB, %v for 64 MiB: want as many", as, ab)
	}
}

// BenchmarkScanner streams databases of growing size through a Scanner and
// takes their status: allocations per run stay the same at every size, so
// allocations per MiB fall towards zero.
func BenchmarkScanner(b *testing.B) {
	for _, size := range []int64{4 << 20, 64 << 20, 1 << 30} {
		stream := newBigStream(size)
		buf := make([]byte, 64<<10)
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(size)
			for b.Loop() {
				stream.status(b, buf)
			}
		})
	}
}

// FuzzScanner feeds arbitrary bytes to a Scanner in chunks of arbitrary
// size and asks for their status: it must not panic, must buffer at most two
// of the largest pages, and must read no more than a page at a time.
func FuzzScanner(f *testing.F) {
	inline := bucketValue(0, leafPage(0, leafElem{0, revKey(5, 0, false), []byte("a")}))
	f.Add(etcdDB(4, inline, "3.6.0", nil), uint16(4094))
	f.Add(etcdDB(8, bucketValue(3, nil), "3.6", map[uint64][]byte{
		3: branchPage(3, branchElem{revKey(2, 0, false), 4}, branchElem{revKey(40, 0, false), 5}),
		4: leafPage(4, leafElem{0, revKey(2, 0, false), []byte("x")}),
		5: leafPage(5, leafElem{0, revKey(40, 0, false), bytes.Repeat([]byte("y"), 5000)}),
	}), uint16(100))
	f.Add([]byte("not a database"), uint16(3))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint16) {
		// Most inputs would stop at the meta pages' checksums: give the
		// meta pages at 0 and 4096 a valid one, so that the trees behind
		// them are explored.
		if chunk%2 == 0 {
			data = bytes.Clone(data)
			for _, off := range []int{0, testPageSize} {
				if m := off + pageHeaderSize; len(data) >= m+metaSize {
					h := fnv.New64a()
					h.Write(data[m : m+metaSumLen])
					binary.LittleEndian.PutUint64(data[m+metaSumLen:], h.Sum64())
				}
			}
		}
		s := NewScanner()
		step := int(chunk) + 1
		for off := 0; off < len(data); off += step {
			if _, err := s.Write(data[off:min(len(data), off+step)]); err != nil {
				break
			}
			if cap(s.head) > 4*maxPageSize {
				t.Fatalf("the Scanner buffers %d bytes", cap(s.head))
			}
		}
		read := bytesReadAt(data)
		_, _ = s.Status(func(off, n int64) ([]byte, error) {
			if n > maxPageSize {
				t.Fatalf("read of %d bytes", n)
			}
			return read(off, n)
		})
	})
}
