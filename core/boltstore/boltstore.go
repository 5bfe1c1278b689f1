// Package boltstore is the durable core.Store, embedded in the process: one
// bbolt file (storage.driver: bolt, at storage.path) holds every
// conversation's metadata and event log. It is the default store.
//
// # Layout
//
//	conversations/<conversation id>  JSON of core.Conversation
//	logs/<conversation id>/          one nested bucket per conversation:
//	    'e' seq(8, big endian)       an event (see encodeEvent)
//	    'K' idempotency key          seq(8) of the newest event posted with it
//	ids/<event id>                   seq(8) + conversation id: the event-ID index
//	ids/<event id> 0 <conversation>  the same, for an ID another conversation
//	                                 holds already (a fork's copy: see idRef)
//
// Range scans by Seq are cursor walks over a conversation's 'e' keys.
// EventByID is one lookup in ids (two for a fork's copies). FirstSeqAtOrAfter is a binary search over
// the 'e' keys by each event's stored timestamp: timestamps never decrease
// along a log, so the Seq order is also a time index, and a lookup reads
// O(log² n) pages without a second index to write. A conversation's
// updated_at is not rewritten on every append: reads take it from the last
// event's timestamp when the log is not empty.
//
// The layout is chosen for group commit across many conversations: one
// commit dirties about one leaf page per conversation it appends to, plus
// the right edge of ids, where time-ordered (version 7) event IDs land
// together. Every write is one bbolt transaction and one sync. Deleting a
// conversation drops its nested bucket and its entries in ids.
package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/agent-server/agent-server/core"
)

var (
	bucketConversations = []byte("conversations")
	bucketLogs          = []byte("logs")
	bucketIDs           = []byte("ids")
)

// Key prefixes in a conversation's log bucket. The key index sorts before
// the events, so the bucket's last key is always its last event.
const (
	prefixEvent = 'e'
	prefixKey   = 'K'
)

// Stored event formats, the first byte of each: 1 has no idempotency key,
// 2 has one (see encodeEvent). Both are read.
const (
	eventFormat     = 1
	eventFormatKeys = 2
)

// Options tunes Open.
type Options struct {
	// NoSync skips the fsync of each commit: fast and NOT durable. Only for
	// tests and benchmark setup.
	NoSync bool
	// Timeout bounds the wait for the file lock another process holds;
	// 0 means 2 s.
	Timeout time.Duration
}

// Store is a core.Store in one bbolt file, safe for concurrent use.
type Store struct {
	db *bolt.DB
}

// Open opens or creates the store file at path, creating its directory.
func Open(path string, opts Options) (*Store, error) {
	if path == "" {
		return nil, errors.New("open bolt store: empty path")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open bolt store: create directory: %w", err)
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:        timeout,
		NoSync:         opts.NoSync,
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if err != nil {
		return nil, fmt.Errorf("open bolt store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketConversations, bucketLogs, bucketIDs} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open bolt store %s: create buckets: %w", path, err)
	}
	return &Store{db: db}, nil
}

// Close closes the file. Calls after Close fail.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close bolt store: %w", err)
	}
	return nil
}

// CreateConversation stores c unless its ID exists.
func (s *Store) CreateConversation(_ context.Context, c *core.Conversation) (*core.Conversation, bool, error) {
	var stored *core.Conversation
	created := false
	err := s.db.Update(func(tx *bolt.Tx) error {
		convs := tx.Bucket(bucketConversations)
		if v := convs.Get([]byte(c.ID)); v != nil {
			var err error
			stored, err = decodeConversation(v)
			return err
		}
		v, err := json.Marshal(c)
		if err != nil {
			return fmt.Errorf("encode: %w", err)
		}
		if err := convs.Put([]byte(c.ID), v); err != nil {
			return err
		}
		if _, err := tx.Bucket(bucketLogs).CreateBucketIfNotExists([]byte(c.ID)); err != nil {
			return err
		}
		stored, created = c.Clone(), true
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("create conversation %s: %w", c.ID, err)
	}
	return stored, created, nil
}

// Conversation returns the conversation id.
func (s *Store) Conversation(_ context.Context, id string) (*core.Conversation, error) {
	var c *core.Conversation
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketConversations).Get([]byte(id))
		if v == nil {
			return core.ErrNotFound
		}
		var err error
		c, err = decodeConversation(v)
		if err == nil {
			touch(c, tx.Bucket(bucketLogs).Bucket([]byte(id)))
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("conversation %s: %w", id, err)
	}
	return c, nil
}

// Conversations returns every conversation, in ID order.
func (s *Store) Conversations(_ context.Context) ([]*core.Conversation, error) {
	var out []*core.Conversation
	err := s.db.View(func(tx *bolt.Tx) error {
		logs := tx.Bucket(bucketLogs)
		return tx.Bucket(bucketConversations).ForEach(func(k, v []byte) error {
			c, err := decodeConversation(v)
			if err != nil {
				return err
			}
			touch(c, logs.Bucket(k))
			out = append(out, c)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list conversations: %w", err)
	}
	return out, nil
}

// UpdateConversation replaces the metadata of c.ID. A bolt file has one
// owner, whose epoch is 0: any other is fenced.
func (s *Store) UpdateConversation(_ context.Context, c *core.Conversation, epoch uint64) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		convs := tx.Bucket(bucketConversations)
		if convs.Get([]byte(c.ID)) == nil {
			return core.ErrNotFound
		}
		if epoch != 0 {
			return fmt.Errorf("epoch %d: %w", epoch, core.ErrFenced)
		}
		v, err := json.Marshal(c)
		if err != nil {
			return fmt.Errorf("encode: %w", err)
		}
		return convs.Put([]byte(c.ID), v)
	})
	if err != nil {
		return fmt.Errorf("update conversation %s: %w", c.ID, err)
	}
	return nil
}

// DeleteConversation removes a conversation and its whole log.
func (s *Store) DeleteConversation(_ context.Context, id string) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		convs := tx.Bucket(bucketConversations)
		if convs.Get([]byte(id)) == nil {
			return core.ErrNotFound
		}
		if err := convs.Delete([]byte(id)); err != nil {
			return err
		}
		logs := tx.Bucket(bucketLogs)
		log := logs.Bucket([]byte(id))
		if log == nil {
			return nil
		}
		ids := tx.Bucket(bucketIDs)
		err := log.ForEach(func(k, v []byte) error {
			if k[0] != prefixEvent {
				return nil // a key index entry, dropped with the bucket
			}
			eventID, err := storedID(v)
			if err != nil {
				return err
			}
			return deleteID(ids, eventID, id)
		})
		if err != nil {
			return err
		}
		return logs.DeleteBucket([]byte(id))
	})
	if err != nil {
		return fmt.Errorf("delete conversation %s: %w", id, err)
	}
	return nil
}

// AppendEvents appends events to one conversation in its own transaction.
func (s *Store) AppendEvents(ctx context.Context, id string, events []*core.Event) error {
	return s.AppendBatch(ctx, []core.Append{{ConversationID: id, Events: events}})[0]
}

// AppendBatch appends every element in one transaction and one sync. Each
// element is checked (conversation exists, Seq continue the log) before
// anything of it is written, so a refused element leaves no trace. When the
// commit itself fails, every element gets that error.
func (s *Store) AppendBatch(_ context.Context, batch []core.Append) []error {
	errs := make([]error, len(batch))
	err := s.db.Update(func(tx *bolt.Tx) error {
		convs, logs, ids := tx.Bucket(bucketConversations), tx.Bucket(bucketLogs), tx.Bucket(bucketIDs)
		for i, a := range batch {
			err := appendTo(convs, logs, ids, a)
			if isTxError(err) {
				return err
			}
			errs[i] = err
		}
		return nil
	})
	if err != nil {
		for i := range errs {
			errs[i] = fmt.Errorf("append to conversation %s: %w", batch[i].ConversationID, err)
		}
	}
	return errs
}

// refusedError is an element AppendBatch refuses without failing the
// transaction.
type refusedError struct{ err error }

func (e *refusedError) Error() string { return e.err.Error() }
func (e *refusedError) Unwrap() error { return e.err }

func isTxError(err error) bool {
	var r *refusedError
	return err != nil && !errors.As(err, &r)
}

// appendTo writes one element: the events and their ID index entries.
func appendTo(convs, logs, ids *bolt.Bucket, a core.Append) error {
	id := a.ConversationID
	refuse := func(format string, args ...any) error {
		return &refusedError{fmt.Errorf("conversation %s: "+format, append([]any{id}, args...)...)}
	}
	if convs.Get([]byte(id)) == nil {
		return refuse("%w", core.ErrNotFound)
	}
	if len(a.Events) == 0 {
		return nil
	}
	log := logs.Bucket([]byte(id))
	if log == nil {
		var err error
		if log, err = logs.CreateBucket([]byte(id)); err != nil {
			return err
		}
	}
	if a.Epoch != 0 {
		// A bolt file has one owner, the process that opened it: the epoch
		// never moves from 0.
		return refuse("epoch %d: %w", a.Epoch, core.ErrFenced)
	}
	next := lastSeq(log) + 1
	for i, ev := range a.Events {
		if ev.Seq != next+uint64(i) {
			return refuse("event seq %d, the log continues at %d: %w", ev.Seq, next+uint64(i), core.ErrSeqConflict)
		}
		if len(ev.Raw) == 0 || ev.ID == "" || len(ev.ID) > 255 || strings.IndexByte(ev.ID, 0) >= 0 {
			return refuse("event %q is not sealed", ev.ID)
		}
		if _, ok := idSeq(ids, []byte(ev.ID), id); ok || slices.ContainsFunc(a.Events[:i], func(e *core.Event) bool { return e.ID == ev.ID }) {
			return refuse("event %s: %w", ev.ID, core.ErrDuplicateEventID)
		}
		if len(ev.IdempotencyKey) > core.MaxIdempotencyKey {
			return refuse("event %s: idempotency key longer than %d bytes", ev.ID, core.MaxIdempotencyKey)
		}
	}
	// Keys are appended in order, so bbolt can fill pages completely.
	log.FillPercent = 0.95
	for _, ev := range a.Events {
		seq := seqKey(ev.Seq)
		if err := log.Put(seq, encodeEvent(ev)); err != nil {
			return err
		}
		if err := putID(ids, []byte(ev.ID), id, ev.Seq); err != nil {
			return err
		}
		if ev.IdempotencyKey != "" {
			if err := log.Put(keyKey(ev.IdempotencyKey), seq[1:]); err != nil {
				return err
			}
		}
	}
	return nil
}

// touch sets c.UpdatedAt to its last event's timestamp, as if each append
// had written it.
func touch(c *core.Conversation, log *bolt.Bucket) {
	if log == nil {
		return
	}
	if _, v := lastEvent(log); len(v) >= 9 {
		c.UpdatedAt = time.Unix(0, int64(binary.BigEndian.Uint64(v[1:9]))).UTC()
	}
}

// Events returns up to limit events after afterSeq, oldest first.
func (s *Store) Events(_ context.Context, id string, afterSeq uint64, limit int) ([]*core.Event, error) {
	var out []*core.Event
	err := s.db.View(func(tx *bolt.Tx) error {
		log, err := logOf(tx, id)
		if err != nil {
			return err
		}
		c := log.Cursor()
		for k, v := c.Seek(seqKey(afterSeq + 1)); k != nil && k[0] == prefixEvent; k, v = c.Next() {
			ev, err := decodeEvent(binary.BigEndian.Uint64(k[1:]), v)
			if err != nil {
				return err
			}
			out = append(out, ev)
			if limit > 0 && len(out) >= limit {
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("events of conversation %s after %d: %w", id, afterSeq, err)
	}
	return out, nil
}

// EventByID looks the event up in the ID index.
func (s *Store) EventByID(_ context.Context, id, eventID string) (*core.Event, error) {
	var ev *core.Event
	err := s.db.View(func(tx *bolt.Tx) error {
		log, err := logOf(tx, id)
		if err != nil {
			return err
		}
		seq, ok := idSeq(tx.Bucket(bucketIDs), []byte(eventID), id)
		if !ok {
			return core.ErrNotFound
		}
		v := log.Get(seqKey(seq))
		if v == nil {
			return fmt.Errorf("index names seq %d, which is missing", seq)
		}
		ev, err = decodeEvent(seq, v)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("event %s of conversation %s: %w", eventID, id, err)
	}
	return ev, nil
}

// EventByKey looks the key up in the conversation's key index.
func (s *Store) EventByKey(_ context.Context, id, key string) (*core.Event, error) {
	var ev *core.Event
	err := s.db.View(func(tx *bolt.Tx) error {
		log, err := logOf(tx, id)
		if err != nil {
			return err
		}
		ref := log.Get(keyKey(key))
		if len(ref) != 8 {
			return core.ErrNotFound
		}
		seq := binary.BigEndian.Uint64(ref)
		v := log.Get(seqKey(seq))
		if v == nil {
			return fmt.Errorf("key index names seq %d, which is missing", seq)
		}
		ev, err = decodeEvent(seq, v)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("event with idempotency key of conversation %s: %w", id, err)
	}
	return ev, nil
}

// FirstSeqAtOrAfter binary-searches the log by the events' timestamps,
// which never decrease with Seq.
func (s *Store) FirstSeqAtOrAfter(_ context.Context, id string, t time.Time) (uint64, error) {
	var seq uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		log, err := logOf(tx, id)
		if err != nil {
			return err
		}
		seq, err = firstAtOrAfter(log, t)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("events of conversation %s since %s: %w", id, t.UTC().Format(core.TimestampLayout), err)
	}
	return seq, nil
}

// firstAtOrAfter returns the Seq of the log's first event with a timestamp
// at or after t, or the last Seq + 1: a binary search over the 'e' keys,
// reading each probe's stored timestamp.
func firstAtOrAfter(log *bolt.Bucket, t time.Time) (uint64, error) {
	want := t.UnixNano()
	if t.Year() < 1678 { // before what UnixNano can hold
		want = -1 << 63
	}
	lo, hi := uint64(1), lastSeq(log)+1 // the answer is in [lo, hi]
	for lo < hi {
		mid := lo + (hi-lo)/2
		v := log.Get(seqKey(mid))
		if len(v) < 9 {
			return 0, fmt.Errorf("event %d: %w", mid, errCorrupt)
		}
		if int64(binary.BigEndian.Uint64(v[1:9])) >= want {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo, nil
}

// SearchEvents walks the Seq window the query's bounds and page ID give
// (core.SeqWindow), checking each event's kind and source in its stored
// header and decoding only the events it returns.
func (s *Store) SearchEvents(_ context.Context, id string, q core.EventQuery) (core.Page[*core.Event], error) {
	var page core.Page[*core.Event]
	limit := q.Limit
	if limit < 1 {
		limit = core.DefaultPageLimit
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		log, from, to, err := window(tx, id, q.Filter, q.PageID, q.Order == core.SortTimestampDesc)
		if err != nil {
			return err
		}
		return walk(log, from, to, q.Order == core.SortTimestampDesc, func(seq uint64, v []byte, h header) (bool, error) {
			if !h.matches(q.Filter) {
				return true, nil
			}
			if len(page.Items) == limit {
				page.NextPageID = string(h.id)
				return false, nil
			}
			ev, err := decodeEvent(seq, v)
			if err != nil {
				return false, err
			}
			page.Items = append(page.Items, ev)
			return true, nil
		})
	})
	if err != nil {
		return core.Page[*core.Event]{}, fmt.Errorf("search events of conversation %s: %w", id, err)
	}
	return page, nil
}

// CountEvents counts the events in the filter's Seq window: without a kind
// or source filter that is the window's size, else a walk over the stored
// headers.
func (s *Store) CountEvents(_ context.Context, id string, f core.EventFilter) (int, error) {
	n := 0
	err := s.db.View(func(tx *bolt.Tx) error {
		log, from, to, err := window(tx, id, f, "", false)
		if err != nil {
			return err
		}
		if f.Kind == "" && f.Source == "" {
			n = int(to - from)
			return nil
		}
		return walk(log, from, to, false, func(_ uint64, _ []byte, h header) (bool, error) {
			if h.matches(f) {
				n++
			}
			return true, nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("count events of conversation %s: %w", id, err)
	}
	return n, nil
}

// window returns the conversation's log and the Seq window [from, to) of a
// search (core.SeqWindow); an unknown pageID is core.ErrUnknownPageID.
func window(tx *bolt.Tx, id string, f core.EventFilter, pageID string, desc bool) (log *bolt.Bucket, from, to uint64, err error) {
	if log, err = logOf(tx, id); err != nil {
		return nil, 0, 0, err
	}
	var since, before, cursor uint64
	if !f.Since.IsZero() {
		if since, err = firstAtOrAfter(log, f.Since); err != nil {
			return nil, 0, 0, err
		}
	}
	if !f.Before.IsZero() {
		if before, err = firstAtOrAfter(log, f.Before); err != nil {
			return nil, 0, 0, err
		}
	}
	if pageID != "" {
		var ok bool
		if cursor, ok = idSeq(tx.Bucket(bucketIDs), []byte(pageID), id); !ok {
			return nil, 0, 0, core.ErrUnknownPageID
		}
	}
	from, to = core.SeqWindow(lastSeq(log), since, before, cursor, desc)
	return log, from, to, nil
}

// walk calls fn for each event with Seq in [from, to), upward or downward
// when desc, until fn returns false or an error. v is valid only inside
// the transaction.
func walk(log *bolt.Bucket, from, to uint64, desc bool, fn func(seq uint64, v []byte, h header) (bool, error)) error {
	if from >= to {
		return nil
	}
	c := log.Cursor()
	var k, v []byte
	if desc {
		if k, _ = c.Seek(seqKey(to)); k == nil {
			k, v = c.Last()
		} else {
			k, v = c.Prev()
		}
	} else {
		k, v = c.Seek(seqKey(from))
	}
	for ; len(k) == 9 && k[0] == prefixEvent; k, v = step(c, desc) {
		seq := binary.BigEndian.Uint64(k[1:])
		if seq < from || seq >= to {
			return nil
		}
		h, err := readHeader(seq, v)
		if err != nil {
			return err
		}
		if more, err := fn(seq, v, h); err != nil || !more {
			return err
		}
	}
	return nil
}

func step(c *bolt.Cursor, desc bool) ([]byte, []byte) {
	if desc {
		return c.Prev()
	}
	return c.Next()
}

// LastSeq returns the newest event's Seq, 0 for an empty log.
func (s *Store) LastSeq(_ context.Context, id string) (uint64, error) {
	var seq uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		log, err := logOf(tx, id)
		if err != nil {
			return err
		}
		seq = lastSeq(log)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("last event of conversation %s: %w", id, err)
	}
	return seq, nil
}

// logOf returns the conversation's log bucket, ErrNotFound for an unknown
// conversation. A known conversation always has one (CreateConversation
// makes it).
func logOf(tx *bolt.Tx, id string) (*bolt.Bucket, error) {
	if tx.Bucket(bucketConversations).Get([]byte(id)) == nil {
		return nil, core.ErrNotFound
	}
	log := tx.Bucket(bucketLogs).Bucket([]byte(id))
	if log == nil {
		return nil, errors.New("log bucket is missing")
	}
	return log, nil
}

// lastSeq returns the Seq of the log's last event, 0 for an empty log.
func lastSeq(log *bolt.Bucket) uint64 {
	if k, _ := lastEvent(log); k != nil {
		return binary.BigEndian.Uint64(k[1:])
	}
	return 0
}

// lastEvent returns the key and value of the log's last event, nil for an
// empty log.
func lastEvent(log *bolt.Bucket) (k, v []byte) {
	k, v = log.Cursor().Last()
	if len(k) != 9 || k[0] != prefixEvent {
		return nil, nil
	}
	return k, v
}

// keyKey is the log bucket's key of an idempotency key's index entry.
func keyKey(key string) []byte { return append([]byte{prefixKey}, key...) }

// The event-ID index maps an event ID to its Seq and conversation. Event
// IDs are unique within a conversation, and almost always across them:
// only a fork copies its source's IDs. So the first conversation to hold
// an ID has it as its key alone, and each other one under the ID, a 0
// byte (which appendTo refuses in an event ID) and its own ID. An append, a lookup and a delete touch
// the plain key, and the second only when the first names another
// conversation.

// idKey returns the key under which conversation conv's event eventID is
// (or would be) indexed.
func idKey(ids *bolt.Bucket, eventID []byte, conv string) []byte {
	if ref := ids.Get(eventID); ref == nil || (len(ref) >= 8 && string(ref[8:]) == conv) {
		return eventID
	}
	return sharedIDKey(eventID, conv)
}

func sharedIDKey(eventID []byte, conv string) []byte {
	k := make([]byte, 0, len(eventID)+1+len(conv))
	return append(append(append(k, eventID...), 0), conv...)
}

// idSeq looks up conversation conv's event eventID. The shared keys sort
// right after the plain one, so it is one seek.
func idSeq(ids *bolt.Bucket, eventID []byte, conv string) (uint64, bool) {
	c := ids.Cursor()
	for k, ref := c.Seek(eventID); bytes.HasPrefix(k, eventID); k, ref = c.Next() {
		if len(k) > len(eventID) && k[len(eventID)] != 0 {
			break // another ID that starts with this one
		}
		if len(ref) >= 8 && string(ref[8:]) == conv {
			return binary.BigEndian.Uint64(ref[:8]), true
		}
	}
	return 0, false
}

// deleteID drops conversation conv's event eventID from the index.
func deleteID(ids *bolt.Bucket, eventID []byte, conv string) error {
	if ref := ids.Get(eventID); len(ref) >= 8 && string(ref[8:]) == conv {
		return ids.Delete(eventID)
	}
	return ids.Delete(sharedIDKey(eventID, conv))
}

// putID indexes conversation conv's event eventID at seq.
func putID(ids *bolt.Bucket, eventID []byte, conv string, seq uint64) error {
	ref := make([]byte, 8, 8+len(conv))
	binary.BigEndian.PutUint64(ref, seq)
	return ids.Put(idKey(ids, eventID, conv), append(ref, conv...))
}

func seqKey(seq uint64) []byte {
	k := make([]byte, 9)
	k[0] = prefixEvent
	binary.BigEndian.PutUint64(k[1:], seq)
	return k
}

// storedID returns the event ID inside a stored event, without copying.
func storedID(v []byte) ([]byte, error) {
	if len(v) < 14 || (v[0] != eventFormat && v[0] != eventFormatKeys) || len(v) < 14+int(v[13]) {
		return nil, errCorrupt
	}
	return v[14 : 14+int(v[13])], nil
}

// encodeEvent writes an event as
//
//	format(1) unix nanos(8) bodyStart(4) len(id)(1) id len(source)(1) source len(kind)(1) kind [len(key)(1) key] raw
//
// where the key is there in format 2 only (an event posted with an
// idempotency key). Raw is the sealed wire form; Body is "{" +
// raw[bodyStart:] (Seal writes the envelope first, then the body's
// members).
func encodeEvent(ev *core.Event) []byte {
	bodyStart := core.BodyOffset(ev.Raw)
	fields := []string{ev.ID, string(ev.Source), ev.Kind}
	format := byte(eventFormat)
	if ev.IdempotencyKey != "" {
		fields, format = append(fields, ev.IdempotencyKey), eventFormatKeys
	}
	v := make([]byte, 0, 17+len(ev.ID)+len(ev.Source)+len(ev.Kind)+len(ev.IdempotencyKey)+len(ev.Raw))
	v = append(v, format)
	v = binary.BigEndian.AppendUint64(v, uint64(ev.Timestamp.UnixNano()))
	v = binary.BigEndian.AppendUint32(v, uint32(bodyStart))
	for _, s := range fields {
		v = append(v, byte(len(s)))
		v = append(v, s...)
	}
	return append(v, ev.Raw...)
}

// header is the envelope of a stored event, read in place: every slice
// is in bbolt's memory, valid only inside the transaction.
type header struct {
	ts                    int64
	bodyStart             int
	id, source, kind, key []byte
	raw                   []byte
}

// matches reports whether the event passes f's kind and source, without
// copying anything.
func (h header) matches(f core.EventFilter) bool {
	return (f.Kind == "" || string(h.kind) == f.Kind) && (f.Source == "" || string(h.source) == string(f.Source))
}

// readHeader parses what encodeEvent wrote before the raw bytes.
func readHeader(seq uint64, v []byte) (header, error) {
	if len(v) < 13 || (v[0] != eventFormat && v[0] != eventFormatKeys) {
		return header{}, corrupt(seq)
	}
	h := header{ts: int64(binary.BigEndian.Uint64(v[1:9])), bodyStart: int(binary.BigEndian.Uint32(v[9:13]))}
	rest := v[13:]
	fields := []*[]byte{&h.id, &h.source, &h.kind}
	if v[0] == eventFormatKeys {
		fields = append(fields, &h.key)
	}
	for _, f := range fields {
		if len(rest) < 1 || len(rest) < 1+int(rest[0]) {
			return header{}, corrupt(seq)
		}
		*f = rest[1 : 1+rest[0]]
		rest = rest[1+rest[0]:]
	}
	if h.bodyStart > len(rest) {
		return header{}, corrupt(seq)
	}
	h.raw = rest
	return h, nil
}

// decodeEvent copies an event out of bbolt's memory (valid only inside the
// transaction) into one allocation shared by Raw and Body.
func decodeEvent(seq uint64, v []byte) (*core.Event, error) {
	h, err := readHeader(seq, v)
	if err != nil {
		return nil, err
	}
	rest, bodyStart := h.raw, h.bodyStart
	buf := make([]byte, len(rest)+1+len(rest)-bodyStart)
	raw := buf[:len(rest)]
	copy(raw, rest)
	body := buf[len(rest):]
	body[0] = '{'
	copy(body[1:], rest[bodyStart:])
	if bodyStart == len(rest) { // no members: the body was empty
		body = append(body[:1:1], '}')
	}
	return &core.Event{
		ID: string(h.id), Seq: seq, Timestamp: time.Unix(0, h.ts).UTC(),
		Source: core.Source(h.source), Kind: string(h.kind), Body: body, Raw: raw,
		IdempotencyKey: string(h.key),
	}, nil
}

var errCorrupt = errors.New("stored event is corrupt")

func corrupt(seq uint64) error { return fmt.Errorf("event %d: %w", seq, errCorrupt) }

func decodeConversation(v []byte) (*core.Conversation, error) {
	c := new(core.Conversation)
	if err := json.Unmarshal(v, c); err != nil {
		return nil, fmt.Errorf("decode conversation: %w", err)
	}
	return c, nil
}

// ForkConversation stores fork with copies of the events from names, in
// one transaction. Each copy is the stored event with its new Seq and
// without its idempotency key.
func (s *Store) ForkConversation(_ context.Context, fork *core.Conversation, from core.ForkSource) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		convs, logs, ids := tx.Bucket(bucketConversations), tx.Bucket(bucketLogs), tx.Bucket(bucketIDs)
		if convs.Get([]byte(fork.ID)) != nil {
			return core.ErrConversationExists
		}
		src, err := logOf(tx, from.ConversationID)
		if err != nil {
			return err
		}
		v, err := json.Marshal(fork)
		if err != nil {
			return fmt.Errorf("encode: %w", err)
		}
		if err := convs.Put([]byte(fork.ID), v); err != nil {
			return err
		}
		log, err := logs.CreateBucket([]byte(fork.ID))
		if err != nil {
			return err
		}
		log.FillPercent = 0.95
		seqs := from.Seqs
		if seqs == nil {
			seqs = make([]uint64, from.Through)
			for i := range seqs {
				seqs[i] = uint64(i + 1)
			}
		}
		for i, seq := range seqs {
			stored := src.Get(seqKey(seq))
			if stored == nil || (i > 0 && seq <= seqs[i-1]) {
				return fmt.Errorf("event seq %d: %w", seq, core.ErrNotFound)
			}
			ev, err := decodeEvent(seq, stored)
			if err != nil {
				return err
			}
			ev.Seq, ev.IdempotencyKey = uint64(i+1), ""
			if err := log.Put(seqKey(ev.Seq), encodeEvent(ev)); err != nil {
				return err
			}
			if err := putID(ids, []byte(ev.ID), fork.ID, ev.Seq); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("fork %s from %s: %w", fork.ID, from.ConversationID, err)
	}
	return nil
}

var _ core.Store = (*Store)(nil)
