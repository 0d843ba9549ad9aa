package api

import (
	"errors"
	"fmt"
)

// Error codes carried in API error bodies.
const (
	CodeInvalid      = "invalid"      // 400: the request or spec is malformed
	CodeUnauthorized = "unauthorized" // 401: no or wrong credentials
	CodeForbidden    = "forbidden"    // 403
	CodeNotFound     = "not_found"    // 404
	CodeConflict     = "conflict"     // 409: changed concurrently or already exists
	CodeTooLarge     = "too_large"    // 413: body over the limit
	CodeUnsupported  = "unsupported"  // 415
	CodeInternal     = "internal"     // 500
	CodeUnavailable  = "unavailable"  // 503
)

// Error is the JSON body of every API error, and the error the Go client
// returns for one.
type Error struct {
	// Code is a stable machine-readable code (CodeInvalid, ...).
	Code string `json:"code"`
	// Message says what is wrong, for a person.
	Message string `json:"message"`
	// Field is the path of the offending field, such as "task.ports[1].name",
	// when one field is to blame.
	Field string `json:"field,omitempty"`
	// Status is the HTTP status; not part of the body.
	Status int `json:"-"`
}

func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s: %s", e.Field, e.Message)
	}
	return e.Message
}

// FieldError is a validation error of one field of a spec.
type FieldError struct {
	Field   string
	Message string
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Message
	}
	return e.Field + ": " + e.Message
}

// Invalid returns a *FieldError.
func Invalid(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// FieldOf returns the field path of err if it is or wraps a *FieldError or an
// *Error with a field.
func FieldOf(err error) string {
	var fe *FieldError
	if errors.As(err, &fe) {
		return fe.Field
	}
	var ae *Error
	if errors.As(err, &ae) {
		return ae.Field
	}
	return ""
}

// IsNotFound reports whether err is an API error with code not_found.
func IsNotFound(err error) bool {
	var ae *Error
	return errors.As(err, &ae) && ae.Code == CodeNotFound
}
