// Package firstmessage is the built-in authenticator, named first_message,
// that reads the session API key from the first WebSocket frame, as the
// OpenHands agent-server's current clients send it:
//
//	{"type":"auth","session_api_key":"..."}
//
// The server asks for it only after an upgrade that every pre-upgrade
// authenticator abstained on; see package server and package actors.
package firstmessage

import (
	"bytes"
	"context"
	"encoding/json"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/plugins"
	"github.com/agent-server/agent-server/plugins/internal/apikey"
)

// Name is the plugin's name in chains and its binary's suffix (auth-first_message).
const Name = core.FirstMessageAuthenticator

// FrameType is the "type" of an auth frame.
const FrameType = "auth"

// Plugin authenticates by an auth frame that is a WebSocket's first message.
type Plugin struct {
	keys apikey.Checker
}

// New returns an unconfigured first_message plugin.
func New() *Plugin { return &Plugin{} }

// Info declares the plugin and its one input.
func (p *Plugin) Info(context.Context) plugins.Info {
	return plugins.Info{
		Name:      Name,
		Version:   apikey.Version,
		Inputs:    plugins.Inputs{FirstMessage: true},
		WantsKeys: true,
	}
}

// Configure loads the session API keys.
func (p *Plugin) Configure(_ context.Context, req plugins.ConfigureRequest) error {
	return p.keys.Configure(req)
}

// Authenticate abstains without a first message. Malformed JSON, another
// type, a missing key or a wrong one is denied.
func (p *Plugin) Authenticate(_ context.Context, req *core.Request) core.Result {
	if len(bytes.TrimSpace(req.FirstMessage)) == 0 {
		return core.Abstained()
	}
	key, reason := Key(req.FirstMessage)
	if reason != "" {
		return core.Denied(reason)
	}
	return p.keys.Check(key)
}

// Key returns the key of an auth frame, or a reason, never containing the
// key, why the frame is not one.
func Key(frame []byte) (key, reason string) {
	var f struct {
		Type          *string `json:"type"`
		SessionAPIKey *string `json:"session_api_key"`
	}
	if err := json.Unmarshal(frame, &f); err != nil {
		return "", "first message is not a JSON object"
	}
	switch {
	case f.Type == nil || *f.Type != FrameType:
		return "", `first message is not of type "auth"`
	case f.SessionAPIKey == nil || *f.SessionAPIKey == "":
		return "", "auth message has no session_api_key"
	}
	return *f.SessionAPIKey, ""
}

var _ plugins.Plugin = (*Plugin)(nil)
