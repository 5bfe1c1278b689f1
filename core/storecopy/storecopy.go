// Package storecopy copies every conversation and event from one
// core.Store to another, keeping their IDs, Seq and timestamps byte for
// byte: how a single node's bolt file moves to PostgreSQL, and back
// (agent-server storage copy).
//
// A copy is safe to run again, and to resume after it was interrupted:
// events the target holds already are compared with the source's and
// skipped when identical, and the rest of each log is appended after them.
// A target that has diverged (the same event ID or Seq with other content,
// a log longer than the source's, the same conversation ID created at
// another time) stops the copy with an error naming the conversation and
// the event. Conversation metadata that changed on the source since an
// earlier copy (a status, a title) is brought up to date.
package storecopy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/agent-server/agent-server/core"
)

// page is how many events are read and appended at a time.
const page = 1000

// Stats says how far a copy got.
type Stats struct {
	Conversations     int   // conversations in the source
	ConversationsDone int   // conversations whose log is fully copied
	Created           int   // conversations created in the target
	EventsCopied      int64 // events appended to the target
	EventsSkipped     int64 // events the target held already, identical
}

// DivergedError is a target that holds other content under an ID or Seq
// the source uses.
type DivergedError struct {
	ConversationID string
	Seq            uint64 // 0 when it is the conversation itself
	EventID        string
	What           string
}

// Error names the conversation and the event.
func (e *DivergedError) Error() string {
	where := "conversation " + e.ConversationID
	if e.Seq > 0 {
		where += fmt.Sprintf(", event %d (%s)", e.Seq, e.EventID)
	}
	return "the target has diverged from the source at " + where + ": " + e.What
}

// Copy copies every conversation of from into to, calling progress (if
// not nil) after each page of events and each conversation.
func Copy(ctx context.Context, from, to core.Store, progress func(Stats)) (Stats, error) {
	var st Stats
	report := func() {
		if progress != nil {
			progress(st)
		}
	}
	convs, err := from.Conversations(ctx)
	if err != nil {
		return st, fmt.Errorf("read the source's conversations: %w", err)
	}
	slices.SortFunc(convs, core.ConversationOrder(core.SortCreatedAt))
	st.Conversations = len(convs)
	report()
	for _, c := range convs {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		if err := copyConversation(ctx, from, to, c, &st, report); err != nil {
			return st, err
		}
		st.ConversationsDone++
		report()
	}
	return st, nil
}

// copyConversation brings one conversation's metadata and log over.
func copyConversation(ctx context.Context, from, to core.Store, c *core.Conversation, st *Stats, report func()) error {
	stored, created, err := to.CreateConversation(ctx, c)
	if err != nil {
		return fmt.Errorf("create conversation %s in the target: %w", c.ID, err)
	}
	if created {
		st.Created++
	} else {
		if !stored.CreatedAt.Equal(c.CreatedAt) {
			return &DivergedError{ConversationID: c.ID, What: fmt.Sprintf("it was created at %s in the target, %s in the source", stored.CreatedAt, c.CreatedAt)}
		}
		if !sameMetadata(stored, c) {
			if err := to.UpdateConversation(ctx, c, 0); err != nil {
				return fmt.Errorf("update conversation %s in the target: %w", c.ID, err)
			}
		}
	}
	srcLast, err := from.LastSeq(ctx, c.ID)
	if err != nil {
		return fmt.Errorf("read the source's log of %s: %w", c.ID, err)
	}
	dstLast, err := to.LastSeq(ctx, c.ID)
	if err != nil {
		return fmt.Errorf("read the target's log of %s: %w", c.ID, err)
	}
	if dstLast > srcLast {
		return &DivergedError{ConversationID: c.ID, What: fmt.Sprintf("the target's log has %d events, the source's only %d", dstLast, srcLast)}
	}
	// What the target holds already must be what the source holds.
	for after := uint64(0); after < dstLast; {
		src, err := from.Events(ctx, c.ID, after, min(page, int(dstLast-after)))
		if err != nil {
			return fmt.Errorf("read the source's log of %s: %w", c.ID, err)
		}
		dst, err := to.Events(ctx, c.ID, after, min(page, int(dstLast-after)))
		if err != nil {
			return fmt.Errorf("read the target's log of %s: %w", c.ID, err)
		}
		if len(src) == 0 || len(src) != len(dst) {
			return fmt.Errorf("read the logs of %s after %d: the source returned %d events, the target %d", c.ID, after, len(src), len(dst))
		}
		for i := range src {
			if d := compare(src[i], dst[i]); d != "" {
				return &DivergedError{ConversationID: c.ID, Seq: src[i].Seq, EventID: src[i].ID, What: d}
			}
		}
		after = src[len(src)-1].Seq
		st.EventsSkipped += int64(len(src))
		report()
	}
	for after := dstLast; after < srcLast; {
		evs, err := from.Events(ctx, c.ID, after, page)
		if err != nil {
			return fmt.Errorf("read the source's log of %s: %w", c.ID, err)
		}
		if len(evs) == 0 {
			break
		}
		if err := to.AppendEvents(ctx, c.ID, evs); err != nil {
			if errors.Is(err, core.ErrDuplicateEventID) {
				return &DivergedError{ConversationID: c.ID, Seq: evs[0].Seq, EventID: evs[0].ID, What: "an event ID of this page is held by another event in the target: " + err.Error()}
			}
			return fmt.Errorf("append to %s in the target: %w", c.ID, err)
		}
		after = evs[len(evs)-1].Seq
		st.EventsCopied += int64(len(evs))
		report()
	}
	return nil
}

// compare says how two events with the same Seq differ, "" if they do not.
func compare(src, dst *core.Event) string {
	switch {
	case src.ID != dst.ID:
		return fmt.Sprintf("its ID is %s in the target", dst.ID)
	case !src.Timestamp.Equal(dst.Timestamp):
		return fmt.Sprintf("its timestamp is %s in the target, %s in the source", dst.Timestamp, src.Timestamp)
	case string(src.Raw) != string(dst.Raw):
		return "its content differs"
	}
	return ""
}

// sameMetadata reports whether a and b hold the same metadata, apart from
// updated_at, which each store derives from the log.
func sameMetadata(a, b *core.Conversation) bool {
	x, y := a.Clone(), b.Clone()
	x.UpdatedAt = y.UpdatedAt
	xa, err1 := json.Marshal(x)
	ya, err2 := json.Marshal(y)
	return err1 == nil && err2 == nil && string(xa) == string(ya)
}
