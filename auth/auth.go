// Package auth holds Kagzi's API keys as each replica sees them: secrets
// and their hashes, and the Keyring, a cache of every key that checks a
// request's key without a database query, reloads when a key is created or
// revoked anywhere (the LISTEN connection says so) and records when keys
// were last used, at most about once a minute each.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kagzi/kagzi/domain"
)

// SecretPrefix starts every secret, so that a leaked one is recognisable
// (by people and by secret scanners).
const SecretPrefix = "kagzi_"

// secretBytes is the randomness of a secret: 256 bits.
const secretBytes = 32

// NewSecret returns a fresh secret and its hash. The secret is
// SecretPrefix and 256 random bits in unpadded base64url.
func NewSecret() (secret string, hash []byte) {
	b := make([]byte, secretBytes)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	secret = SecretPrefix + base64.RawURLEncoding.EncodeToString(b)
	return secret, Hash(secret)
}

// Hash is what is stored of a secret: its SHA-256. A secret carries 256
// random bits, so nobody can find one from its hash by trying secrets; a
// slow password hash (bcrypt, argon2) protects guessable passwords, and
// would only add milliseconds to every request here.
func Hash(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// Mode is KAGZI_AUTH.
type Mode string

// The authentication modes.
const (
	// ModeAuto turns authentication on once any key has been created; it
	// stays on when every key is later revoked.
	ModeAuto Mode = "auto"
	// ModeRequired has authentication on from the start.
	ModeRequired Mode = "required"
	// ModeOff leaves every route open but key management.
	ModeOff Mode = "off"
)

// ParseMode reads a mode; "" is ModeAuto.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case "":
		return ModeAuto, nil
	case ModeAuto, ModeRequired, ModeOff:
		return m, nil
	}
	return "", fmt.Errorf("must be auto, required or off, not %q", s)
}

// Store is what the Keyring needs of storage.
type Store interface {
	// APIKeys returns every key that is not revoked, and whether any key
	// exists.
	APIKeys(ctx context.Context) ([]domain.StoredAPIKey, bool, error)
	// TouchAPIKeys records that the keys were used now.
	TouchAPIKeys(ctx context.Context, keyIDs []string) error
	CreateAPIKey(ctx context.Context, n domain.NewAPIKey, expiresAt *time.Time, secretHash []byte) (domain.APIKey, error)
	ListAPIKeys(ctx context.Context, p domain.Page) ([]domain.APIKey, string, error)
	RevokeAPIKey(ctx context.Context, keyID string) (domain.APIKey, error)
}

// Creator is what creating a key needs of storage.
type Creator interface {
	CreateAPIKey(ctx context.Context, n domain.NewAPIKey, expiresAt *time.Time, secretHash []byte) (domain.APIKey, error)
}

// Create validates n at now, and records a key with a fresh secret. It
// returns the record and the secret, which is shown this once.
func Create(ctx context.Context, store Creator, n domain.NewAPIKey, now time.Time) (domain.APIKey, string, error) {
	expiresAt, err := n.Validate(now)
	if err != nil {
		return domain.APIKey{}, "", err
	}
	secret, hash := NewSecret()
	key, err := store.CreateAPIKey(ctx, n, expiresAt, hash)
	if err != nil {
		return domain.APIKey{}, "", err
	}
	return key, secret, nil
}

// TouchInterval is how often, at most, one replica records that a key was
// used.
const TouchInterval = time.Minute

// DefaultBackstop is how often a Keyring reloads the keys without being
// told to, in case a notification was lost.
const DefaultBackstop = time.Minute

// Keyring is one replica's cache of the API keys.
type Keyring struct {
	store  Store
	mode   Mode
	logger *slog.Logger
	// Backstop is the interval of reloads that no notification asked for
	// (jittered); DefaultBackstop when zero. Set it before Run.
	Backstop time.Duration

	loadMu  sync.Mutex // loads one at a time, so that a stale one never lands last
	snap    atomic.Pointer[snapshot]
	refresh chan struct{}

	mu      sync.Mutex
	touched map[string]struct{} // keys used since the last write of last_used_at
	touch   chan struct{}
}

// snapshot is the keys as of one load.
type snapshot struct {
	byHash map[[sha256.Size]byte]*entry
	anyKey bool // some key exists or existed
}

type entry struct {
	key  domain.APIKey
	hash [sha256.Size]byte
	// lastUse is when this replica last recorded the key's use (unix ns).
	lastUse atomic.Int64
}

// NewKeyring returns a keyring over store for mode. It does no I/O: Load
// or Run loads the keys.
func NewKeyring(store Store, mode Mode, logger *slog.Logger) *Keyring {
	return &Keyring{
		store:   store,
		mode:    mode,
		logger:  logger.With("component", "auth"),
		refresh: make(chan struct{}, 1),
		touched: map[string]struct{}{},
		touch:   make(chan struct{}, 1),
	}
}

// Mode returns the keyring's mode.
func (k *Keyring) Mode() Mode { return k.mode }

// errNotLoaded answers requests that need the keys before their first load.
var errNotLoaded = domain.Errorf(domain.CodeUnavailable, "the API keys are not loaded yet")

// On reports whether requests need a key: always in ModeRequired, never in
// ModeOff, and in ModeAuto once a key exists. Before the keys are loaded
// in ModeAuto it returns an unavailable error.
func (k *Keyring) On() (bool, error) {
	switch k.mode {
	case ModeRequired:
		return true, nil
	case ModeOff:
		return false, nil
	}
	s := k.snap.Load()
	if s == nil {
		return false, errNotLoaded
	}
	return s.anyKey, nil
}

// errUnknownKey is the one answer for a key that is unknown, revoked or
// expired: it says nothing about which, and never repeats the key.
var errUnknownKey = domain.Errorf(domain.CodeUnauthenticated, "the API key is unknown, revoked or expired")

// Check returns the key whose secret is secret, when it is usable now. It
// costs a hash and a map lookup, no query. The secret is never compared
// itself: its SHA-256 is, in constant time, so that timing reveals
// nothing of a stored secret.
func (k *Keyring) Check(secret string) (domain.APIKey, error) {
	s := k.snap.Load()
	if s == nil {
		return domain.APIKey{}, errNotLoaded
	}
	h := sha256.Sum256([]byte(secret))
	e := s.byHash[h]
	if e == nil || subtle.ConstantTimeCompare(e.hash[:], h[:]) != 1 {
		return domain.APIKey{}, errUnknownKey
	}
	now := time.Now()
	if !e.key.Usable(now) {
		return domain.APIKey{}, errUnknownKey
	}
	k.used(e, now)
	return e.key, nil
}

// used notes that e was used at now, for Run to write when this replica
// has not recorded a use of it for TouchInterval.
func (k *Keyring) used(e *entry, now time.Time) {
	last := e.lastUse.Load()
	if now.UnixNano()-last < int64(TouchInterval) || !e.lastUse.CompareAndSwap(last, now.UnixNano()) {
		return
	}
	k.mu.Lock()
	k.touched[e.key.KeyID] = struct{}{}
	k.mu.Unlock()
	select {
	case k.touch <- struct{}{}:
	default:
	}
}

// Refresh asks Run to reload the keys. It never blocks: the listener calls
// it when a key was created or revoked, and after a reconnect.
func (k *Keyring) Refresh() {
	select {
	case k.refresh <- struct{}{}:
	default:
	}
}

// Load loads the keys once.
func (k *Keyring) Load(ctx context.Context) error {
	k.loadMu.Lock()
	defer k.loadMu.Unlock()
	keys, anyKey, err := k.store.APIKeys(ctx)
	if err != nil {
		return err
	}
	old := k.snap.Load()
	s := &snapshot{byHash: make(map[[sha256.Size]byte]*entry, len(keys)), anyKey: anyKey}
	for _, sk := range keys {
		if len(sk.SecretHash) != sha256.Size {
			continue
		}
		e := &entry{key: sk.APIKey}
		copy(e.hash[:], sk.SecretHash)
		if sk.LastUsedAt != nil {
			e.lastUse.Store(sk.LastUsedAt.UnixNano())
		}
		if old != nil {
			if prev := old.byHash[e.hash]; prev != nil && prev.lastUse.Load() > e.lastUse.Load() {
				e.lastUse.Store(prev.lastUse.Load())
			}
		}
		s.byHash[e.hash] = e
	}
	k.snap.Store(s)
	switch {
	case old == nil:
		k.logState(anyKey)
	case k.mode == ModeAuto && anyKey && !old.anyKey:
		k.logger.Info("authentication is on: an API key exists (KAGZI_AUTH=auto)")
	}
	return nil
}

// logState says at the first load whether requests need a key; a warning
// while they do not names the setting that changes it.
func (k *Keyring) logState(anyKey bool) {
	switch {
	case k.mode == ModeOff:
		k.logger.Warn("authentication is off (KAGZI_AUTH=off): anyone who reaches the port may act on every namespace; set KAGZI_AUTH=auto or required to turn it on")
	case k.mode == ModeAuto && !anyKey:
		k.logger.Warn("authentication is off until the first API key is created (KAGZI_AUTH=auto): anyone who reaches the port may act on every namespace; create one with `kagzi keys create --name admin --role admin`, or set KAGZI_AUTH=required")
	default:
		k.logger.Info("authentication is on", "mode", string(k.mode))
	}
}

// Run reloads the keys when Refresh asks, and every Backstop in any case,
// and records the keys' use, until ctx ends. A failed load is retried
// within a second.
func (k *Keyring) Run(ctx context.Context) error {
	backstop := k.Backstop
	if backstop <= 0 {
		backstop = DefaultBackstop
	}
	jittered := func() time.Duration { return backstop/2 + mrand.N(backstop/2+1) }
	next := time.Duration(0)
	if k.snap.Load() != nil {
		next = jittered()
	}
	timer := time.NewTimer(next)
	defer timer.Stop()
	reload := func() {
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		if err := k.Load(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			k.logger.Warn("load API keys; retrying", "error", err)
			timer.Reset(time.Second)
			return
		}
		timer.Reset(jittered())
	}
	for {
		select {
		case <-ctx.Done():
			k.flush(context.WithoutCancel(ctx))
			return nil
		case <-k.refresh:
			reload()
		case <-timer.C:
			// The timer has fired: Stop in reload finds it drained.
			reload()
		case <-k.touch:
			k.flush(ctx)
		}
	}
}

// flush writes last_used_at of the keys used since the last flush.
func (k *Keyring) flush(ctx context.Context) {
	k.mu.Lock()
	ids := make([]string, 0, len(k.touched))
	for id := range k.touched {
		ids = append(ids, id)
	}
	clear(k.touched)
	k.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := k.store.TouchAPIKeys(ctx, ids); err != nil && !errors.Is(err, context.Canceled) {
		k.logger.Warn("record API key use", "error", err, "keys", len(ids))
	}
}

// Create creates a key (see Create) and reloads this replica's keys
// before it returns; the others hear of it from the LISTEN connection.
func (k *Keyring) Create(ctx context.Context, n domain.NewAPIKey) (domain.APIKey, string, error) {
	key, secret, err := Create(ctx, k.store, n, time.Now())
	if err == nil {
		k.reloadNow(ctx)
	}
	return key, secret, err
}

// reloadNow reloads the keys, or has Run do it when that fails.
func (k *Keyring) reloadNow(ctx context.Context) {
	if err := k.Load(ctx); err != nil {
		k.Refresh()
	}
}

// List returns a page of keys, revoked ones included.
func (k *Keyring) List(ctx context.Context, p domain.Page) ([]domain.APIKey, string, error) {
	return k.store.ListAPIKeys(ctx, p)
}

// Revoke revokes a key: on this replica before it returns, on the others
// within a second.
func (k *Keyring) Revoke(ctx context.Context, keyID string) (domain.APIKey, error) {
	key, err := k.store.RevokeAPIKey(ctx, keyID)
	if err == nil {
		k.reloadNow(ctx)
	}
	return key, err
}
