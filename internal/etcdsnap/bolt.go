package etcdsnap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// The bbolt file format, as bbolt v1.3 (etcd 3.5) and v1.4 (etcd 3.6) write
// it. Every page starts with a 16-byte header: id (uint64), flags (uint16),
// count (uint16), overflow (uint32); a page with overflow n spans n+1 pages.
// All integers are little-endian, as bbolt writes them on the platforms etcd
// supports.
const (
	pageHeaderSize  = 16
	elementSize     = 16 // a branch or leaf element, before the keys
	bucketHeaderLen = 16 // root pgid and sequence, before an inline page

	branchPageFlag = 0x01
	leafPageFlag   = 0x02
	bucketLeafFlag = 0x01

	boltMagic   = 0xED0CDAED
	boltVersion = 2
	metaSize    = 64 // magic .. checksum
	metaSumLen  = 56 // the bytes the FNV-64a checksum covers

	// minPageSize and maxPageSize bound the page sizes accepted; bbolt
	// itself looks for the second meta page from 1 KiB to 16 MiB, but an
	// etcd member uses the operating system's page size (4 KiB or 64 KiB).
	minPageSize = 1024
	maxPageSize = 1 << 20

	// maxDepth bounds a walk down a tree, so that a corrupt page that
	// points back at its ancestors ends in an error.
	maxDepth = 64
	// maxPageReads bounds the pages one Status reads, for the same reason.
	maxPageReads = 4096
	// maxVersionLen bounds the storage version value read.
	maxVersionLen = 4096
)

// The names etcd gives its buckets and keys (server/storage/schema).
var (
	keyBucket             = []byte("key")
	metaBucket            = []byte("meta")
	metaStorageVersionKey = []byte("storageVersion")
)

// revKeyLen is the shortest key of the "key" bucket etcd can read: an
// 8-byte main revision, '_', an 8-byte sub revision (then an optional 't'
// for a tombstone).
const revKeyLen = 17

// Status is what `etcdutl snapshot status` reports of a snapshot that
// hcpsnap can compute from the stream without holding the database.
type Status struct {
	// Revision is the main revision of the last key of etcd's "key" bucket
	// in key order, 0 when the bucket is empty (etcdutl's rule in 3.5 and
	// 3.6).
	Revision int64
	// TotalSize is the size of the bbolt database: its high-water page id
	// times its page size, as bbolt's Tx.Size.
	TotalSize int64
	// Version is the storage version recorded by etcd 3.6 and later in the
	// "meta" bucket, normalised as go-semver prints it, or "" when the
	// snapshot has none or it is not a version (etcd 3.5).
	Version string
}

// meta is the part of a bbolt meta page Status needs.
type meta struct {
	raw      [pageHeaderSize + metaSize]byte // the page header and meta as streamed
	off      int64                           // where the page is in the stream
	pageSize uint32
	root     uint64 // the root bucket's page
	pgid     uint64 // the high-water mark: pages in the database
	txid     uint64
}

// Scanner is fed a snapshot stream in order, as an io.Writer (for example
// through an io.TeeReader beside the Verifier), and keeps only bbolt's two
// meta pages and a byte count. Its memory does not grow with the database:
// the stream's pages are not kept, and Status reads the few pages on the
// path to the answer (the root bucket's, the "key" bucket's rightmost path,
// the "meta" bucket's) from the stored object afterwards. A Scanner is not
// safe for concurrent use.
type Scanner struct {
	head  []byte // the stream's first bytes, until both meta pages are read
	n     int64
	meta  *meta
	err   error
	metas [2]*meta // both meta pages once read, nil when invalid
}

// NewScanner returns a Scanner at the start of a stream.
func NewScanner() *Scanner { return &Scanner{} }

// Write implements io.Writer. It fails (and keeps failing) once the stream
// is known not to be a bbolt database, so that an upload reading through an
// io.TeeReader stops early.
func (s *Scanner) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	s.n += int64(len(p))
	if s.meta != nil {
		return len(p), nil
	}
	// Take only what the meta pages need: at most two of the largest pages.
	if room := 2*maxPageSize - len(s.head); room > 0 {
		s.head = append(s.head, p[:min(len(p), room)]...)
	}
	done, err := s.readMetas(false)
	if err != nil {
		s.err = err
		s.head = nil
		return 0, err
	}
	if done {
		s.head = nil
	}
	return len(p), nil
}

// readMetas finds the page size and both meta pages in s.head, as bbolt's
// Open does: the page size from meta page 0 when it is valid, else from
// meta page 1, looked for at every page size. It returns false while more
// bytes are needed; final says that no more will come.
func (s *Scanner) readMetas(final bool) (bool, error) {
	h := s.head
	if len(h) < pageHeaderSize+metaSize && !final {
		return false, nil
	}
	pageSize := 0
	if m, ok := parseMeta(h, 0); ok {
		pageSize = int(m.pageSize)
	} else {
		for size := minPageSize; size <= maxPageSize; size *= 2 {
			if len(h) < size+pageHeaderSize+metaSize {
				if !final {
					return false, nil
				}
				break
			}
			if m, ok := parseMeta(h, size); ok && int(m.pageSize) == size {
				pageSize = size
				break
			}
		}
	}
	if pageSize == 0 {
		return false, fmt.Errorf("snapshot stream is not a bbolt database (no valid meta page in its first %d bytes)", len(h))
	}
	if len(h) < pageSize+pageHeaderSize+metaSize && !final {
		return false, nil
	}
	m0, ok0 := parseMeta(h, 0)
	m1, ok1 := parseMeta(h, pageSize)
	if ok0 && int(m0.pageSize) == pageSize {
		s.metas[0] = &m0
	}
	if ok1 && int(m1.pageSize) == pageSize {
		s.metas[1] = &m1
	}
	// bbolt uses the meta page with the higher transaction id when it is
	// valid, else the other one (DB.meta).
	a := s.metas[0]
	if b := s.metas[1]; b != nil && (a == nil || b.txid > a.txid) {
		a = b
	}
	if a == nil {
		return false, errors.New("snapshot stream is not a bbolt database (no valid meta page)")
	}
	if a.root < 2 || a.root >= a.pgid {
		return false, fmt.Errorf("snapshot stream is a corrupt bbolt database: root page %d outside pages 2..%d", a.root, a.pgid)
	}
	s.meta = a
	return true, nil
}

// parseMeta reads the meta page at off in h and validates it as bbolt does:
// magic, version, and the FNV-64a checksum of its first 56 bytes.
func parseMeta(h []byte, off int) (meta, bool) {
	if off+pageHeaderSize+metaSize > len(h) {
		return meta{}, false
	}
	m := h[off+pageHeaderSize : off+pageHeaderSize+metaSize]
	le := binary.LittleEndian
	if le.Uint32(m[0:]) != boltMagic || le.Uint32(m[4:]) != boltVersion {
		return meta{}, false
	}
	sum := fnv.New64a()
	sum.Write(m[:metaSumLen])
	if sum.Sum64() != le.Uint64(m[metaSumLen:]) {
		return meta{}, false
	}
	size := le.Uint32(m[8:])
	if size < minPageSize || size > maxPageSize {
		return meta{}, false
	}
	out := meta{off: int64(off), pageSize: size, root: le.Uint64(m[16:]), pgid: le.Uint64(m[40:]), txid: le.Uint64(m[48:])}
	copy(out.raw[:], h[off:])
	return out, true
}

// Status returns what `etcdutl snapshot status` reports of the database
// streamed through s: Revision, TotalSize and Version (see Status). readAt
// reads n bytes at offset off of the stored snapshot, the stream that went
// through s (hcpsnap gives it a ranged GET); Status reads a few pages with
// it, each at most one page at a time, walking from the winning meta page's
// root so that a stale free page is never read as a live one.
//
// It does not compute etcdutl's hash and key count: both need every live
// page in key order, which the stream does not give without holding the
// database or reading all of it again.
func (s *Scanner) Status(readAt func(off, n int64) ([]byte, error)) (Status, error) {
	if s.err != nil {
		return Status{}, s.err
	}
	if s.meta == nil {
		if _, err := s.readMetas(true); err != nil {
			return Status{}, err
		}
		s.head = nil
	}
	m := s.meta
	total := int64(m.pgid) * int64(m.pageSize)
	if m.pgid > 1<<40 || total > s.n {
		return Status{}, fmt.Errorf("snapshot stream is truncated: %d bytes, its bbolt database has %d pages of %d bytes", s.n, m.pgid, m.pageSize)
	}
	r := &reader{readAt: readAt, pageSize: int64(m.pageSize), total: total}
	// The stored object must be the database that was streamed: its meta
	// page, transaction id included, reads back the same.
	stored, err := r.read(m.off, int64(len(m.raw)))
	if err != nil {
		return Status{}, err
	}
	if !bytes.Equal(stored, m.raw[:]) {
		return Status{}, fmt.Errorf("the stored snapshot is not the one streamed: its meta page at %d differs", m.off)
	}
	root, err := r.page(m.root)
	if err != nil {
		return Status{}, fmt.Errorf("root bucket: %w", err)
	}
	st := Status{TotalSize: total}

	keys, err := r.bucket(root, keyBucket)
	if err != nil {
		return Status{}, err
	}
	if keys != nil {
		last, err := r.lastKey(keys, 0)
		if err != nil {
			return Status{}, fmt.Errorf("bucket %q: %w", keyBucket, err)
		}
		if last != nil {
			if last.n < revKeyLen {
				return Status{}, fmt.Errorf("bucket %q: last key has %d bytes, not a revision", keyBucket, last.n)
			}
			k, err := last.read(revKeyLen)
			if err != nil {
				return Status{}, err
			}
			st.Revision = int64(binary.BigEndian.Uint64(k[:8]))
		}
	}

	// etcdutl 3.6 reads meta/storageVersion and keeps it when go-semver
	// parses it; 3.5 has no such field and its etcd does not write the key.
	mb, err := r.bucket(root, metaBucket)
	if err != nil {
		return Status{}, err
	}
	if mb == nil {
		return Status{}, fmt.Errorf("snapshot has no %q bucket: not an etcd database", metaBucket)
	}
	v, err := r.get(mb, metaStorageVersionKey)
	if err != nil {
		return Status{}, fmt.Errorf("bucket %q: %w", metaBucket, err)
	}
	st.Version = semverString(v)
	return st, nil
}

// reader reads pages of the stored database on demand.
type reader struct {
	readAt   func(off, n int64) ([]byte, error)
	pageSize int64
	total    int64
	reads    int
}

// page is one branch or leaf page: a page of the file, or a bucket's inline
// page inside a value. off and end are offsets in the object.
type page struct {
	r        *reader
	off, end int64
	branch   bool
	count    int
	head     []byte // the bytes read at once: the first page or the inline page
}

func (r *reader) read(off, n int64) ([]byte, error) {
	if off < 0 || n < 0 || off+n > r.total {
		return nil, fmt.Errorf("corrupt database: read of %d bytes at %d outside its %d bytes", n, off, r.total)
	}
	r.reads++
	if r.reads > maxPageReads {
		return nil, fmt.Errorf("corrupt database: more than %d reads to find the status", maxPageReads)
	}
	b, err := r.readAt(off, n)
	if err != nil {
		return nil, fmt.Errorf("read %d bytes at %d of the stored snapshot: %w", n, off, err)
	}
	if int64(len(b)) != n {
		return nil, fmt.Errorf("read %d bytes at %d of the stored snapshot: got %d", n, off, len(b))
	}
	return b, nil
}

// page reads the header and first page of page id.
func (r *reader) page(id uint64) (*page, error) {
	if id < 2 || id >= uint64(r.total/r.pageSize) {
		return nil, fmt.Errorf("corrupt database: page %d outside pages 2..%d", id, r.total/r.pageSize)
	}
	off := int64(id) * r.pageSize
	b, err := r.read(off, r.pageSize)
	if err != nil {
		return nil, err
	}
	if got := binary.LittleEndian.Uint64(b); got != id {
		return nil, fmt.Errorf("corrupt database: page %d says it is page %d", id, got)
	}
	overflow := int64(binary.LittleEndian.Uint32(b[12:]))
	end := off + (overflow+1)*r.pageSize
	if end > r.total {
		return nil, fmt.Errorf("corrupt database: page %d with %d overflow pages runs past the end", id, overflow)
	}
	return newPage(r, off, end, b, fmt.Sprintf("page %d", id))
}

func newPage(r *reader, off, end int64, head []byte, name string) (*page, error) {
	if len(head) < pageHeaderSize {
		return nil, fmt.Errorf("corrupt database: %s is shorter than a page header", name)
	}
	p := &page{r: r, off: off, end: end, head: head, count: int(binary.LittleEndian.Uint16(head[10:]))}
	switch flags := binary.LittleEndian.Uint16(head[8:]); flags {
	case branchPageFlag:
		p.branch = true
		if p.count == 0 {
			return nil, fmt.Errorf("corrupt database: %s is an empty branch page", name)
		}
	case leafPageFlag:
	default:
		return nil, fmt.Errorf("corrupt database: %s has flags %#x, not a branch or leaf page", name, flags)
	}
	if pageHeaderSize+int64(p.count)*elementSize > end-off {
		return nil, fmt.Errorf("corrupt database: %s has %d elements, more than fit", name, p.count)
	}
	return p, nil
}

// bytes returns n bytes at rel from the page's start, from the bytes already
// read when it can.
func (p *page) bytes(rel, n int64) ([]byte, error) {
	if rel < 0 || n < 0 || rel+n > p.end-p.off {
		return nil, fmt.Errorf("corrupt database: element at %d+%d outside its page of %d bytes", rel, n, p.end-p.off)
	}
	if rel+n <= int64(len(p.head)) {
		return p.head[rel : rel+n], nil
	}
	return p.r.read(p.off+rel, n)
}

// slice is a key or value inside a page, read only as far as needed.
type slice struct {
	p      *page
	rel, n int64
}

func (s *slice) read(n int64) ([]byte, error) { return s.p.bytes(s.rel, min(n, s.n)) }

// element returns the i-th element's fields: for a branch page its key and
// child page; for a leaf page its flags, key and value.
func (p *page) element(i int) (flags uint32, key, value slice, child uint64, err error) {
	at := int64(pageHeaderSize + i*elementSize)
	e, err := p.bytes(at, elementSize)
	if err != nil {
		return 0, slice{}, slice{}, 0, err
	}
	le := binary.LittleEndian
	if p.branch {
		pos, ksize := int64(le.Uint32(e[0:])), int64(le.Uint32(e[4:]))
		return 0, slice{p, at + pos, ksize}, slice{}, le.Uint64(e[8:]), nil
	}
	flags = le.Uint32(e[0:])
	pos, ksize, vsize := int64(le.Uint32(e[4:])), int64(le.Uint32(e[8:])), int64(le.Uint32(e[12:]))
	return flags, slice{p, at + pos, ksize}, slice{p, at + pos + ksize, vsize}, 0, nil
}

// compare compares the key with target, reading at most len(target)+1 bytes.
func (s *slice) compare(target []byte) (int, error) {
	b, err := s.read(int64(len(target)) + 1)
	if err != nil {
		return 0, err
	}
	return bytes.Compare(b, target), nil
}

// seek finds key in the tree under p as bbolt's Cursor.seek does and returns
// its leaf element, or ok false when it is not there.
func (r *reader) seek(p *page, key []byte, depth int) (flags uint32, value slice, ok bool, err error) {
	if depth > maxDepth {
		return 0, slice{}, false, errors.New("corrupt database: tree deeper than bbolt writes")
	}
	var cmpErr error
	index := sort.Search(p.count, func(i int) bool {
		if cmpErr != nil {
			return true
		}
		_, k, _, _, err := p.element(i)
		c := 0
		if err == nil {
			c, err = k.compare(key)
		}
		if err != nil {
			cmpErr = err
			return true
		}
		if p.branch && c == 0 {
			ok = true
		}
		return c != -1
	})
	if cmpErr != nil {
		return 0, slice{}, false, cmpErr
	}
	if p.branch {
		// The child whose range holds key: the last one starting at or
		// before it.
		if !ok && index > 0 {
			index--
		}
		if index >= p.count {
			index = p.count - 1
		}
		_, _, _, child, err := p.element(index)
		if err != nil {
			return 0, slice{}, false, err
		}
		c, err := r.page(child)
		if err != nil {
			return 0, slice{}, false, err
		}
		return r.seek(c, key, depth+1)
	}
	if index >= p.count {
		return 0, slice{}, false, nil
	}
	flags, k, v, _, err := p.element(index)
	if err != nil {
		return 0, slice{}, false, err
	}
	c, err := k.compare(key)
	if err != nil || c != 0 {
		return 0, slice{}, false, err
	}
	return flags, v, true, nil
}

// bucket opens the bucket name of the bucket under root: its root page, or
// its inline page inside the value. It returns nil when there is no such
// bucket (or the key holds a value, as bbolt's Tx.Bucket).
func (r *reader) bucket(root *page, name []byte) (*page, error) {
	flags, v, ok, err := r.seek(root, name, 0)
	if err != nil {
		return nil, fmt.Errorf("bucket %q: %w", name, err)
	}
	if !ok || flags&bucketLeafFlag == 0 {
		return nil, nil
	}
	if v.n < bucketHeaderLen {
		return nil, fmt.Errorf("bucket %q: corrupt database: bucket value of %d bytes", name, v.n)
	}
	hdr, err := v.read(bucketHeaderLen)
	if err != nil {
		return nil, err
	}
	if id := binary.LittleEndian.Uint64(hdr); id != 0 {
		p, err := r.page(id)
		if err != nil {
			return nil, fmt.Errorf("bucket %q: %w", name, err)
		}
		return p, nil
	}
	// An inline bucket: its page follows the header inside the value,
	// which is at most a quarter of a page.
	if v.n-bucketHeaderLen > r.pageSize {
		return nil, fmt.Errorf("bucket %q: corrupt database: inline bucket of %d bytes", name, v.n)
	}
	off := v.p.off + v.rel + bucketHeaderLen
	body, err := v.p.bytes(v.rel+bucketHeaderLen, v.n-bucketHeaderLen)
	if err != nil {
		return nil, err
	}
	p, err := newPage(r, off, off+v.n-bucketHeaderLen, body, fmt.Sprintf("inline bucket %q", name))
	if err != nil {
		return nil, err
	}
	if p.branch {
		return nil, fmt.Errorf("bucket %q: corrupt database: inline bucket with a branch page", name)
	}
	return p, nil
}

// get returns the value of key in the bucket under p, nil when absent or a
// nested bucket (bbolt's Bucket.Get), read up to maxVersionLen bytes.
func (r *reader) get(p *page, key []byte) ([]byte, error) {
	flags, v, ok, err := r.seek(p, key, 0)
	if err != nil || !ok || flags&bucketLeafFlag != 0 {
		return nil, err
	}
	if v.n > maxVersionLen {
		return nil, fmt.Errorf("value of %q has %d bytes, more than a version", key, v.n)
	}
	b, err := v.read(v.n)
	return bytes.Clone(b), err
}

// lastKey returns the last key of the tree under p in key order, nil when
// the tree holds none. Like bbolt's cursor it passes over empty pages.
func (r *reader) lastKey(p *page, depth int) (*slice, error) {
	if depth > maxDepth {
		return nil, errors.New("corrupt database: tree deeper than bbolt writes")
	}
	if !p.branch {
		if p.count == 0 {
			return nil, nil
		}
		_, k, _, _, err := p.element(p.count - 1)
		if err != nil {
			return nil, err
		}
		return &k, nil
	}
	for i := p.count - 1; i >= 0; i-- {
		_, _, _, child, err := p.element(i)
		if err != nil {
			return nil, err
		}
		c, err := r.page(child)
		if err != nil {
			return nil, err
		}
		k, err := r.lastKey(c, depth+1)
		if err != nil || k != nil {
			return k, err
		}
	}
	return nil, nil
}

// reIdentifier is go-semver's rule for pre-release and metadata.
var reIdentifier = regexp.MustCompile(`^[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*$`)

// semverString returns v as etcdutl 3.6 prints it: parsed by
// github.com/coreos/go-semver's NewVersion and printed by its String, or ""
// when it does not parse.
func semverString(v []byte) string {
	s := string(v)
	var metadata, pre string
	if i := strings.Index(s, "+"); i >= 0 {
		s, metadata = s[:i], s[i+1:]
	}
	if i := strings.Index(s, "-"); i >= 0 {
		s, pre = s[:i], s[i+1:]
	}
	parts := strings.SplitN(s, ".", 3)
	if len(parts) != 3 {
		return ""
	}
	for _, id := range []string{pre, metadata} {
		if id != "" && !reIdentifier.MatchString(id) {
			return ""
		}
	}
	var n [3]int64
	for i, part := range parts {
		x, err := strconv.ParseInt(part, 10, 64)
		if err != nil {
			return ""
		}
		n[i] = x
	}
	out := fmt.Sprintf("%d.%d.%d", n[0], n[1], n[2])
	if pre != "" {
		out += "-" + pre
	}
	if metadata != "" {
		out += "+" + metadata
	}
	return out
}

var _ io.Writer = (*Scanner)(nil)
