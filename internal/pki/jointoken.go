package pki

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// JoinTokenPrefix starts every join token, with the format version.
const JoinTokenPrefix = "BERTH-1-"

// ErrJoinToken means a string is not a well-formed join token. Its message
// never repeats the token.
var ErrJoinToken = errors.New("pki: malformed join token")

// JoinToken is a parsed join token:
// BERTH-1-<64 hex: SHA-256 of the cluster CA's DER>-<w|m>-<secret>. The
// digest lets a joining node pin the CA before it trusts the manager; the
// secret proves it may join with the role.
type JoinToken struct {
	// CADigest is "sha256:" and the 64 hex digits of the CA's digest.
	CADigest string
	// Role is RoleWorker or RoleManager.
	Role string
	// Secret is the random part.
	Secret string
}

// String returns the token's text.
func (t JoinToken) String() string {
	letter := "w"
	if t.Role == RoleManager {
		letter = "m"
	}
	return JoinTokenPrefix + strings.TrimPrefix(t.CADigest, "sha256:") + "-" + letter + "-" + t.Secret
}

// secretLen is the length of a token's secret: 24 random bytes in hex.
const secretLen = 48

// NewJoinToken returns a fresh token for role that pins ca.
func NewJoinToken(ca *CA, role string) (string, error) {
	if _, err := roleOrg(role); err != nil {
		return "", err
	}
	b := make([]byte, secretLen/2)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("pki: no randomness: %w", err)
	}
	return JoinToken{CADigest: ca.Digest(), Role: role, Secret: hex.EncodeToString(b)}.String(), nil
}

// ParseJoinToken parses a token's text (surrounding space is ignored).
func ParseJoinToken(s string) (JoinToken, error) {
	var t JoinToken
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), JoinTokenPrefix)
	if !ok {
		return t, fmt.Errorf("%w: it must start with %s", ErrJoinToken, JoinTokenPrefix)
	}
	parts := strings.Split(rest, "-")
	if len(parts) != 3 {
		return t, fmt.Errorf("%w: want %s<CA digest>-<w|m>-<secret>", ErrJoinToken, JoinTokenPrefix)
	}
	if len(parts[0]) != 64 || !isLowerHex(parts[0]) {
		return t, fmt.Errorf("%w: the CA digest must be 64 lower-case hex digits", ErrJoinToken)
	}
	switch parts[1] {
	case "w":
		t.Role = RoleWorker
	case "m":
		t.Role = RoleManager
	default:
		return t, fmt.Errorf("%w: the role must be w (worker) or m (manager)", ErrJoinToken)
	}
	if len(parts[2]) != secretLen || !isLowerHex(parts[2]) {
		return t, fmt.Errorf("%w: the secret must be %d lower-case hex digits", ErrJoinToken, secretLen)
	}
	t.CADigest, t.Secret = "sha256:"+parts[0], parts[2]
	return t, nil
}

func isLowerHex(s string) bool {
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// TokenHash is the hex SHA-256 of a token's text: what is compared, so the
// comparison takes the same time whatever the token.
func TokenHash(token string) string {
	s := sha256.Sum256([]byte(strings.TrimSpace(token)))
	return hex.EncodeToString(s[:])
}

// TokenEqual reports in constant time whether two tokens are the same
// (their hashes are compared, so their lengths leak nothing either).
func TokenEqual(a, b string) bool {
	ha, hb := sha256.Sum256([]byte(strings.TrimSpace(a))), sha256.Sum256([]byte(strings.TrimSpace(b)))
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1
}
