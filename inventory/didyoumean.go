package inventory

import (
	"fmt"
	"strings"
)

// didYouMean returns ` (did you mean X?)` for the closest candidate within a
// small edit distance, or "" when nothing is close enough to be a typo.
func didYouMean(got string, candidates []string) string {
	best, bestDist := "", len(got)/2+2
	for _, c := range candidates {
		if strings.EqualFold(c, got) {
			return fmt.Sprintf(" (did you mean %s?)", c)
		}
		if d := editDistance(strings.ToLower(got), strings.ToLower(c)); d < bestDist {
			best, bestDist = c, d
		}
	}
	if best == "" || bestDist > 3 {
		return ""
	}
	return fmt.Sprintf(" (did you mean %s?)", best)
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
