package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strings"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/providers/structs"
	"github.com/knadh/koanf/v2"
)

// EnvPrefix starts every environment variable that sets a config key. "__"
// separates levels: AGENT_SERVER_SERVER__ADDR sets server.addr.
const EnvPrefix = "AGENT_SERVER_"

// Source says where to read configuration from. Later layers win: defaults,
// then File, then environment variables, then Overrides (from flags).
type Source struct {
	File      string            // a YAML file; "" for none
	Environ   []string          // "K=V" pairs; nil means os.Environ()
	Overrides map[string]string // dotted key -> value, e.g. "server.addr"
}

// Load reads, merges, decodes and validates the configuration. An unknown
// key or an invalid value is an error that names the key.
func Load(src Source) (Config, error) {
	k := koanf.New(".")
	if err := k.Load(structs.Provider(Default(), "koanf"), nil); err != nil {
		return Config{}, fmt.Errorf("load defaults: %w", err)
	}
	if src.File != "" {
		if err := k.Load(file.Provider(src.File), yaml.Parser()); err != nil {
			return Config{}, fmt.Errorf("load %s: %w", src.File, err)
		}
	}
	environ := src.Environ
	if environ == nil {
		environ = os.Environ()
	}
	envp := env.Provider(".", env.Opt{
		Prefix:        EnvPrefix,
		EnvironFunc:   func() []string { return environ },
		TransformFunc: envKey,
	})
	if err := k.Load(envp, nil); err != nil {
		return Config{}, fmt.Errorf("load environment: %w", err)
	}
	if len(src.Overrides) > 0 {
		m := make(map[string]any, len(src.Overrides))
		for key, v := range src.Overrides {
			m[key] = v
		}
		if err := k.Load(confmap.Provider(m, "."), nil); err != nil {
			return Config{}, fmt.Errorf("load flags: %w", err)
		}
	}
	var cfg Config
	err := k.UnmarshalWithConf("", &cfg, koanf.UnmarshalConf{
		DecoderConfig: &mapstructure.DecoderConfig{
			DecodeHook: mapstructure.ComposeDecodeHookFunc(
				mapstructure.StringToTimeDurationHookFunc(),
				mapstructure.StringToSliceHookFunc(","),
			),
			ErrorUnused:      true,
			WeaklyTypedInput: true,
			TagName:          "koanf",
			Result:           &cfg,
		},
	})
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", decodeError(err))
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// envKey maps AGENT_SERVER_AUTH__RPC_TIMEOUT to auth.rpc_timeout.
func envKey(k, v string) (string, any) {
	k = strings.TrimPrefix(k, EnvPrefix)
	if k == "" {
		return "", nil
	}
	return strings.ReplaceAll(strings.ToLower(k), "__", "."), v
}

var (
	invalidKeys = regexp.MustCompile(`^'([^']*)' has invalid keys: (.*)$`)
	badValue    = regexp.MustCompile(`^'([^']+)' (.*)$`)
	// quotedValue matches a value a decoder quoted back; a value may be a
	// secret (a key under the wrong field), so it never reaches the error.
	quotedValue = regexp.MustCompile(`(,? ?value: .*$)|("[^"]*")`)
)

// decodeError rewrites mapstructure's messages so each names its full
// dotted key: "unknown key server.bogus", "auth.rpc_timeout: invalid ...".
func decodeError(err error) error {
	var out []string
	for _, line := range strings.Split(err.Error(), "\n") {
		line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "* "))
		if line == "" || strings.HasPrefix(line, "decoding failed") {
			continue
		}
		if m := invalidKeys.FindStringSubmatch(line); m != nil {
			for _, k := range strings.Split(m[2], ", ") {
				if m[1] != "" {
					k = m[1] + "." + k
				}
				out = append(out, "unknown key "+k)
			}
			continue
		}
		if m := badValue.FindStringSubmatch(line); m != nil {
			out = append(out, m[1]+": "+quotedValue.ReplaceAllString(m[2], ""))
			continue
		}
		out = append(out, line)
	}
	return errors.New(strings.Join(out, "; "))
}

// Keys lists every dotted key the Config struct knows, for documentation
// checks. Map-valued keys end with ".*".
func Keys() []string {
	var out []string
	var walk func(prefix string, t reflect.Type)
	walk = func(prefix string, t reflect.Type) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name := prefix + f.Tag.Get("koanf")
			switch {
			case f.Type.Kind() == reflect.Struct && f.Type.String() != "time.Duration":
				walk(name+".", f.Type)
			case f.Type.Kind() == reflect.Map:
				out = append(out, name+".*")
			default:
				out = append(out, name)
			}
		}
	}
	walk("", reflect.TypeOf(Config{}))
	return out
}
