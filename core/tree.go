package core

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// This file is a conversation's event tree, as upstream's ConversationState
// keeps it (openhands-sdk 1.43.1). The log stays append-only and linear
// (Seq); the tree lies on top of it:
//
//   - Every event the conversation's actor appends carries parent_id: the
//     HEAD (leaf_event_id) when it was appended, RootParentID when there is
//     none but the log is not empty (after navigate to null), and no
//     parent_id for the log's first event. A tree node a runtime
//     publishes with a parent_id keeps it; a ConversationStateUpdateEvent
//     always gets the HEAD, whatever parent_id it was published with, since
//     its parent_id is what ResolveHead reads the HEAD from (upstream's
//     own state updates always carry the HEAD of their time: the server
//     makes them, and stamps them).
//   - Each appended event becomes the HEAD, except a
//     ConversationStateUpdateEvent, which is stored but is no tree node.
//   - navigate moves the HEAD to an existing event (or to none), so the
//     next event starts a branch there; the events of other branches stay
//     in the log. The agent's context is the branch from the HEAD to its
//     root (Branch).
//   - An event without parent_id after the log's first (stored before the
//     tree existed) has the event before it as parent, as upstream reads
//     its own older logs.
//
// The HEAD is not written on every append: a conversation records it (its
// Head) when its state is written, with the Seq it held at, and
// ResolveHead derives the current one from the events after that Seq,
// since each of them says what the HEAD was or became.

// RootParentID is the parent_id of an event that starts a new root: one
// appended after navigate to null.
const RootParentID = "__root__"

// Head is where a conversation's event tree grows, as of the log's event
// Seq.
type Head struct {
	// LeafEventID is the HEAD, "" when there is none.
	LeafEventID string `json:"leaf_event_id,omitempty"`
	// Empty is upstream's head_is_empty: navigate to null emptied the HEAD
	// on purpose, and the next event starts a new root.
	Empty bool `json:"empty,omitempty"`
	// Seq is the log's last Seq when the HEAD was this.
	Seq uint64 `json:"seq,omitempty"`
}

// IsTreeNode reports whether an event of kind becomes the HEAD when
// appended: every kind but ConversationStateUpdateEvent.
func IsTreeNode(kind string) bool { return kind != KindStateUpdate }

// ParentFor returns the parent_id of the next event appended at h, when
// the log ends at lastSeq: the HEAD, else RootParentID for a log that is
// not empty, else "" (none).
func (h Head) ParentFor(lastSeq uint64) string {
	switch {
	case h.LeafEventID != "":
		return h.LeafEventID
	case lastSeq > 0:
		return RootParentID
	}
	return ""
}

// After returns the HEAD once an event (id, seq, kind) is appended at h.
func (h Head) After(id string, seq uint64, kind string) Head {
	if IsTreeNode(kind) {
		return Head{LeafEventID: id, Seq: seq}
	}
	h.Seq = seq
	return h
}

var parentKey = []byte(`,"parent_id":`)

// ParentOf returns the parent_id of a sealed event and whether it has one.
// Seal writes it in the envelope; an event a runtime published before that
// may hold it among its body's fields, which is read too.
func ParentOf(raw []byte) (string, bool) {
	head := raw[:min(BodyOffset(raw), len(raw))]
	if i := bytes.Index(head, parentKey); i >= 0 {
		var p string
		dec := json.NewDecoder(bytes.NewReader(head[i+len(parentKey):]))
		if dec.Decode(&p) == nil && p != "" {
			return p, true
		}
		return "", false
	}
	if !bytes.Contains(raw[len(head):], []byte(`"parent_id"`)) {
		return "", false
	}
	var ev struct {
		ParentID *string `json:"parent_id"`
	}
	if json.Unmarshal(raw, &ev) != nil || ev.ParentID == nil || *ev.ParentID == "" {
		return "", false
	}
	return *ev.ParentID, true
}

// effectiveParent is where the tree goes up from ev: the event named by
// its parent_id (id), or, for an event without one after the first, the
// event before it (seq); neither at a root.
func effectiveParent(ev *Event) (id string, seq uint64) {
	p, ok := ParentOf(ev.Raw)
	switch {
	case ok && p == RootParentID:
		return "", 0
	case ok:
		return p, 0
	case ev.Seq > 1:
		return "", ev.Seq - 1
	}
	return "", 0
}

// parentBeyond reports whether the parent that the event at Seq child
// names (by ID want, or by Seq wantSeq when it carries no parent_id) is an
// earlier event of the log, which Branch did not reach; false when the
// log holds no such event.
func parentBeyond(ctx context.Context, st Store, id, want string, wantSeq, child uint64) (bool, error) {
	if want == "" {
		return wantSeq > 0 && wantSeq < child, nil
	}
	ev, err := st.EventByID(ctx, id, want)
	switch {
	case errors.Is(err, ErrNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("look up parent %s: %w", truncate(want, 64), err)
	}
	return ev.Seq < child, nil
}

// How many events ResolveHead and Branch read at a time, walking back
// from the end of the log: a few first (the last event usually decides),
// then more and more.
const (
	treeFirstPage = 4
	treeMaxPage   = 256
)

// backwards calls fn with the events of seq in (stop, from], newest first,
// until fn returns false.
func backwards(ctx context.Context, st Store, id string, stop, from uint64, fn func(*Event) bool) error {
	size := uint64(treeFirstPage)
	for hi := from; hi > stop; size = min(2*size, treeMaxPage) {
		lo := stop
		if hi-stop > size {
			lo = hi - size
		}
		evs, err := st.Events(ctx, id, lo, int(hi-lo))
		if err != nil {
			return fmt.Errorf("read events %d..%d of %s: %w", lo+1, hi, id, err)
		}
		for i := len(evs) - 1; i >= 0; i-- {
			if !fn(evs[i]) {
				return nil
			}
		}
		hi = lo
	}
	return nil
}

// ResolveHead returns the HEAD once the log ends at lastSeq, from h, the
// HEAD a conversation recorded at h.Seq. The events after h.Seq decide,
// newest first: a tree node is the HEAD; a state update carries the HEAD
// of its time as its parent_id. A state update without parent_id (the
// log's first event, or one stored before the tree existed) and an error
// report without one (as upstream's fallback for older logs skips them)
// say nothing. When h.Seq is past lastSeq (the events it counted were
// never stored), the whole log decides.
func ResolveHead(ctx context.Context, st Store, id string, h Head, lastSeq uint64) (Head, error) {
	if h.Seq == lastSeq {
		return h, nil
	}
	stop := uint64(0)
	if h.Seq < lastSeq {
		stop = h.Seq
	}
	var found *Head
	err := backwards(ctx, st, id, stop, lastSeq, func(ev *Event) bool {
		p, stamped := ParentOf(ev.Raw)
		switch {
		case IsTreeNode(ev.Kind) && (stamped || ev.Seq == 1 || ev.Kind != KindConversationError):
			found = &Head{LeafEventID: ev.ID}
		case stamped && !IsTreeNode(ev.Kind) && p == RootParentID:
			found = &Head{Empty: true}
		case stamped && !IsTreeNode(ev.Kind):
			found = &Head{LeafEventID: p}
		default:
			return true
		}
		return false
	})
	switch {
	case err != nil:
		return Head{}, fmt.Errorf("resolve the HEAD of %s: %w", id, err)
	case found != nil:
		h = *found
	case stop == 0:
		h = Head{}
	}
	h.Seq = lastSeq
	return h, nil
}

// ErrBranchTooLong is a branch that Branch does not read to its root: one
// longer than the limit it was given, or one spread over more events of
// the log than BranchReach times that limit.
var ErrBranchTooLong = errors.New("the branch is longer than the limit")

// BranchReach bounds how far back Branch reads, as a multiple of its
// limit: a branch with other branches interleaved reads their events too,
// so with a limit of max, Branch reads at most BranchReach*max events
// before the leaf, however short the branch.
const BranchReach = 2

// Branch returns the Seqs of upstream's path_to_root(leaf): leaf and its
// ancestors, root first. It reads the log back from leaf once. A parent_id
// that names no earlier event (none of the log, or a later one) ends the
// branch there, as a root, however long the log. With max > 0, a branch of
// more than max events, or one whose root lies more than BranchReach*max
// events before leaf, is ErrBranchTooLong, having read at most that many
// events (and looked up by ID the parent it did not reach, to tell one too
// far back from one that is not there).
func Branch(ctx context.Context, st Store, id string, leaf *Event, max int) ([]uint64, error) {
	path := []uint64{leaf.Seq}
	want, wantSeq := effectiveParent(leaf)
	stop := uint64(0) // the walk reads the events after stop
	if reach := uint64(BranchReach) * uint64(max); max > 0 && leaf.Seq-1 > reach {
		stop = leaf.Seq - 1 - reach
	}
	var tooLong bool
	err := backwards(ctx, st, id, stop, leaf.Seq-1, func(ev *Event) bool {
		if want == "" && wantSeq == 0 {
			return false
		}
		if ev.ID != want && ev.Seq != wantSeq {
			return true
		}
		if path = append(path, ev.Seq); max > 0 && len(path) > max {
			tooLong = true
			return false
		}
		want, wantSeq = effectiveParent(ev)
		return true
	})
	switch {
	case err != nil:
		return nil, fmt.Errorf("branch of %s in %s: %w", leaf.ID, id, err)
	case tooLong:
		return nil, fmt.Errorf("branch of %s in %s: %w (%d events)", leaf.ID, id, ErrBranchTooLong, max)
	case stop > 0 && (want != "" || wantSeq != 0):
		child := path[len(path)-1]
		beyond, err := parentBeyond(ctx, st, id, want, wantSeq, child)
		if err != nil {
			return nil, fmt.Errorf("branch of %s in %s: %w", leaf.ID, id, err)
		}
		if beyond {
			return nil, fmt.Errorf("branch of %s in %s: %w: its root is more than %d events (%d times the limit of %d) before it",
				leaf.ID, id, ErrBranchTooLong, leaf.Seq-1-stop, BranchReach, max)
		}
		// The parent is not in the log: child is the root, as in a log
		// short enough to read whole.
	}
	slices.Reverse(path)
	return path, nil
}
