package driver

// LastLines returns the last n lines of b (a final line without a newline
// counts as a line); all of b when n < 0. Drivers and the agent use it to
// answer a log request's tail.
func LastLines(b []byte, n int) []byte {
	if n < 0 {
		return b
	}
	if n == 0 {
		return nil
	}
	end := len(b)
	if end > 0 && b[end-1] == '\n' {
		end--
	}
	for i := end - 1; i >= 0; i-- {
		if b[i] == '\n' {
			if n--; n == 0 {
				return b[i+1:]
			}
		}
	}
	return b
}
