package process

import (
	"errors"
	"fmt"
	"os/user"
	"strconv"
	"strings"
	"syscall"
)

// errUser marks a User field that cannot be resolved.
var errUser = errors.New("process: bad user")

// credential resolves a StartSpec.User: "name", "uid", "name:group" or
// "uid:gid" (either side a name or a number). The user's supplementary
// groups are included when it has a passwd entry. A numeric uid without an
// entry must come with a group ("1234:1234"): there is no primary group to
// fall back on, and falling back to root's would be unsafe. "" returns nil:
// the task runs as the agent.
func credential(spec string) (*syscall.Credential, error) {
	if spec == "" {
		return nil, nil
	}
	name, group, hasGroup := strings.Cut(spec, ":")
	if name == "" || (hasGroup && group == "") {
		return nil, fmt.Errorf("%w: %q: want name, uid, name:group or uid:gid", errUser, spec)
	}
	var u *user.User
	var uid, gid uint32
	if n, err := parseID(name); err == nil {
		uid = n
		u, err = user.LookupId(name)
		var unknown user.UnknownUserIdError
		if err != nil && !errors.As(err, &unknown) {
			return nil, fmt.Errorf("%w: looking up uid %s: %w", errUser, name, err)
		}
		if u == nil && !hasGroup {
			return nil, fmt.Errorf("%w: uid %s has no passwd entry; give a group as %s:GID", errUser, name, name)
		}
	} else {
		if u, err = user.Lookup(name); err != nil {
			return nil, fmt.Errorf("%w: %w", errUser, err)
		}
		if uid, err = parseID(u.Uid); err != nil {
			return nil, fmt.Errorf("%w: user %s has uid %q", errUser, name, u.Uid)
		}
	}
	switch {
	case !hasGroup:
		var err error
		if gid, err = parseID(u.Gid); err != nil {
			return nil, fmt.Errorf("%w: user %s has gid %q", errUser, name, u.Gid)
		}
	default:
		if n, err := parseID(group); err == nil {
			gid = n
		} else {
			g, err := user.LookupGroup(group)
			if err != nil {
				return nil, fmt.Errorf("%w: %w", errUser, err)
			}
			if gid, err = parseID(g.Gid); err != nil {
				return nil, fmt.Errorf("%w: group %s has gid %q", errUser, group, g.Gid)
			}
		}
	}
	cred := &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}
	if u != nil {
		ids, err := u.GroupIds()
		if err != nil {
			return nil, fmt.Errorf("%w: groups of %s: %w", errUser, u.Username, err)
		}
		for _, s := range ids {
			if g, err := parseID(s); err == nil && g != gid {
				cred.Groups = append(cred.Groups, g)
			}
		}
	}
	return cred, nil
}

func parseID(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err
}
