package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kagzi/kagzi/domain"
)

// Every change to api_keys NOTIFYs "k:{key_id}" in its own statement, so
// that every replica's key cache reloads within a second.

const apiKeyColumns = `key_id, name, role, namespaces, created_at, expires_at, revoked_at, last_used_at`

func scanAPIKey(row pgx.Row, k *domain.APIKey, extra ...any) error {
	err := row.Scan(append([]any{&k.KeyID, &k.Name, &k.Role, &k.Namespaces, &k.CreatedAt, &k.ExpiresAt,
		&k.RevokedAt, &k.LastUsedAt}, extra...)...)
	utc(&k.CreatedAt)
	k.ExpiresAt, k.RevokedAt, k.LastUsedAt = utcp(k.ExpiresAt), utcp(k.RevokedAt), utcp(k.LastUsedAt)
	return err
}

const createAPIKeySQL = `
WITH k AS (
	INSERT INTO api_keys (key_id, name, role, namespaces, secret_hash, expires_at)
	VALUES ($1, $2, $3, $4, $5, $6)
	RETURNING ` + apiKeyColumns + `
)
SELECT k.* FROM k, pg_notify('` + Channel + `', 'k:' || k.key_id::text) AS n`

// CreateAPIKey records a key whose secret hashes to secretHash.
func (s *Store) CreateAPIKey(ctx context.Context, n domain.NewAPIKey, expiresAt *time.Time, secretHash []byte) (domain.APIKey, error) {
	var k domain.APIKey
	err := scanAPIKey(s.pool.QueryRow(ctx, createAPIKeySQL, newID(), n.Name, n.Role, n.Namespaces, secretHash, expiresAt), &k)
	if err != nil {
		return k, fmt.Errorf("create API key: %w", translate(err))
	}
	return k, nil
}

const listAPIKeysSQL = `SELECT ` + apiKeyColumns + ` FROM api_keys
WHERE $1::uuid IS NULL OR key_id < $1 ORDER BY key_id DESC LIMIT $2`

// ListAPIKeys returns a page of keys, revoked ones included, newest first.
func (s *Store) ListAPIKeys(ctx context.Context, p domain.Page) ([]domain.APIKey, string, error) {
	var after *string
	if p.After != "" {
		after = &p.After
	}
	rows, err := s.pool.Query(ctx, listAPIKeysSQL, after, p.Limit+1)
	if err != nil {
		return nil, "", fmt.Errorf("list API keys: %w", translate(err))
	}
	keys, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (domain.APIKey, error) {
		var k domain.APIKey
		return k, scanAPIKey(row, &k)
	})
	if err != nil {
		return nil, "", fmt.Errorf("list API keys: %w", translate(err))
	}
	if keys == nil {
		keys = []domain.APIKey{}
	}
	return nextPage(keys, p.Limit, func(k domain.APIKey) string { return k.KeyID })
}

const revokeAPIKeySQL = `
WITH k AS (
	UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now())
	WHERE key_id = $1
	RETURNING ` + apiKeyColumns + `
)
SELECT k.* FROM k, pg_notify('` + Channel + `', 'k:' || k.key_id::text) AS n`

// RevokeAPIKey revokes a key; revoking a revoked key changes nothing.
func (s *Store) RevokeAPIKey(ctx context.Context, keyID string) (domain.APIKey, error) {
	var k domain.APIKey
	if err := scanAPIKey(s.pool.QueryRow(ctx, revokeAPIKeySQL, keyID), &k); err != nil {
		return k, fmt.Errorf("revoke API key %s: %w", keyID, notFound(translate(err), "API key %s not found", keyID))
	}
	return k, nil
}

const usableAPIKeysSQL = `SELECT ` + apiKeyColumns + `, secret_hash FROM api_keys WHERE revoked_at IS NULL`

const anyAPIKeySQL = `SELECT EXISTS (SELECT 1 FROM api_keys)`

// APIKeys returns every key that is not revoked, with its secret's hash,
// and whether any key, revoked or not, exists.
func (s *Store) APIKeys(ctx context.Context) ([]domain.StoredAPIKey, bool, error) {
	rows, err := s.pool.Query(ctx, usableAPIKeysSQL)
	if err != nil {
		return nil, false, fmt.Errorf("load API keys: %w", translate(err))
	}
	keys, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (domain.StoredAPIKey, error) {
		var k domain.StoredAPIKey
		return k, scanAPIKey(row, &k.APIKey, &k.SecretHash)
	})
	if err != nil {
		return nil, false, fmt.Errorf("load API keys: %w", translate(err))
	}
	if len(keys) > 0 {
		return keys, true, nil
	}
	var any bool
	if err := s.pool.QueryRow(ctx, anyAPIKeySQL).Scan(&any); err != nil {
		return nil, false, fmt.Errorf("load API keys: %w", translate(err))
	}
	return keys, any, nil
}

// touchAPIKeysSQL writes last_used_at at most about once a minute per key,
// whatever the number of replicas that saw it used.
const touchAPIKeysSQL = `
UPDATE api_keys SET last_used_at = now()
WHERE key_id = ANY($1) AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')`

// TouchAPIKeys records that the keys were used now.
func (s *Store) TouchAPIKeys(ctx context.Context, keyIDs []string) error {
	if _, err := s.pool.Exec(ctx, touchAPIKeysSQL, keyIDs); err != nil {
		return fmt.Errorf("record API key use: %w", translate(err))
	}
	return nil
}
