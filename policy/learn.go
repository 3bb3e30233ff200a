package policy

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// SyscallUse is what learn mode saw of one syscall that the allowlist in
// force did not allow: how often the samples made it and the shapes of
// its arguments.
type SyscallUse struct {
	// Name is the syscall as the violation monitor names it: "sysinfo",
	// or "i386:open" for another architecture's table.
	Name  string
	Count uint64
	// Shapes are the distinct argument shapes seen (see ArgShape), most
	// frequent first; at most MaxShapes of them are kept.
	Shapes []ShapeCount
	// OtherShapes counts the calls whose shape was not kept.
	OtherShapes uint64
}

// ShapeCount is one argument shape and how many calls had it.
type ShapeCount struct {
	Shape string
	Count uint64
}

// MaxShapes bounds the distinct argument shapes kept per syscall: a
// syscall called with ever-changing arguments must not grow the record
// without bound.
const MaxShapes = 16

// ArgShape renders a syscall's six argument registers as a reviewer reads
// them: small values (flags, counts, descriptors) exactly, negative ones
// (AT_FDCWD is -100) as such, and anything that looks like an address as
// "ptr". Trailing zero registers are left out. The kernel passes all six
// registers whatever the syscall's own argument count: past it they hold
// whatever the caller left there (Go's raw syscalls leave zeros).
func ArgShape(args [6]uint64) string {
	n := len(args)
	for n > 0 && args[n-1] == 0 {
		n--
	}
	parts := make([]string, n)
	for i, a := range args[:n] {
		parts[i] = argClass(a)
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

// argClass renders one register. Addresses of a 64-bit process's heap,
// stacks and libraries lie far above 4 GiB; a value below is a flag, a
// size or an address of a non-PIE binary's data, shown exactly.
func argClass(a uint64) string {
	switch s := int64(a); {
	case s < 0 && s >= -4096:
		return strconv.FormatInt(s, 10)
	case a>>32 == 0 && int32(a) < 0 && int32(a) >= -4096: // a 32-bit int
		return strconv.FormatInt(int64(int32(a)), 10)
	case a < 10:
		return strconv.FormatUint(a, 10)
	case a < 1<<32 || a >= 1<<47: // not a user-space address
		return "0x" + strconv.FormatUint(a, 16)
	}
	return "ptr"
}

// CanAllow says why name cannot be listed in Seccomp.Allow, nil if it
// can: the checks Validate makes of each name. Learn mode lets a renderer
// make only the syscalls a policy could allow.
func CanAllow(name string) error {
	switch {
	case !knownSyscall(name):
		return fmt.Errorf("%w: %q is not a syscall of the architectures sandkit supports", ErrInvalid, name)
	case isEscapeSurface(name):
		return fmt.Errorf("%w: %q is escape surface and cannot be allowed", ErrInvalid, name)
	case uncheckable(name) != "":
		return fmt.Errorf("%w: %q cannot be allowed: %s", ErrInvalid, name, uncheckable(name))
	case inBase(name):
		return fmt.Errorf("%w: %q is in the base allowlist; the calls seen failed its argument conditions, which a policy cannot widen", ErrInvalid, name)
	}
	return nil
}

// Learned returns base with Seccomp.Allow widened by every syscall of
// uses that a policy can allow, sorted by name, and the uses no policy can
// allow (see CanAllow), which a program that needs them cannot run under
// any policy as it stands.
func Learned(base *Policy, uses []SyscallUse) (p *Policy, refused []SyscallUse) {
	p = base.Clone()
	for _, u := range uses {
		switch {
		case CanAllow(u.Name) != nil:
			refused = append(refused, u)
		case !slices.Contains(p.Seccomp.Allow, u.Name):
			p.Seccomp.Allow = append(p.Seccomp.Allow, u.Name)
		}
	}
	slices.Sort(p.Seccomp.Allow)
	return p, refused
}

// FormatLearned renders a learned policy (see Learned) in the text format,
// with only the fields that differ from Strict, as Parse reads it back;
// each syscall of uses is annotated with its count and argument shapes,
// and the uses no policy can allow are listed in comments at the end.
func FormatLearned(p *Policy, uses []SyscallUse) []byte {
	byName := map[string]SyscallUse{}
	var refused []SyscallUse
	for _, u := range uses {
		byName[u.Name] = u
		if CanAllow(u.Name) != nil {
			refused = append(refused, u)
		}
	}
	var b strings.Builder
	b.WriteString("# Learned from sample inputs: every syscall below was made by the\n")
	b.WriteString("# samples beyond the base allowlist, with its count and the shapes of\n")
	b.WriteString("# its arguments (registers past a syscall's own arguments hold whatever\n")
	b.WriteString("# the caller left there). Review each one before using this policy.\n")
	comment := func(field, value string) []string {
		if field != "seccomp.allow" {
			return nil
		}
		u, ok := byName[value]
		if !ok {
			return []string{value + ": not seen in the samples (kept from the base policy)"}
		}
		return useLines(u)
	}
	writeMinimal(&b, "", toProto(p).ProtoReflect(), toProto(Strict()).ProtoReflect(), "", comment)
	if len(refused) > 0 {
		b.WriteString("# REFUSED: no policy can allow these; the samples got EPERM for them:\n")
		for _, u := range refused {
			for _, l := range useLines(u) {
				b.WriteString("#   " + l + "\n")
			}
			b.WriteString("#     why: " + strings.TrimPrefix(CanAllow(u.Name).Error(), ErrInvalid.Error()+": ") + "\n")
		}
	}
	return []byte(b.String())
}

// useLines describes one syscall's use: its count, then one line per
// argument shape.
func useLines(u SyscallUse) []string {
	calls := "calls"
	if u.Count == 1 {
		calls = "call"
	}
	out := []string{fmt.Sprintf("%s: %d %s", u.Name, u.Count, calls)}
	for _, s := range u.Shapes {
		out = append(out, fmt.Sprintf("  %d× %s%s", s.Count, u.Name, s.Shape))
	}
	if u.OtherShapes > 0 {
		out = append(out, fmt.Sprintf("  %d× in other shapes", u.OtherShapes))
	}
	return out
}

// writeMinimal writes the fields of m that differ from def in text
// format, in field order; every repeated element is written (def has
// none), preceded by comment lines comment returns for it.
func writeMinimal(b *strings.Builder, indent string, m, def protoreflect.Message, path string, comment func(field, value string) []string) {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		name := string(fd.Name())
		field := strings.TrimPrefix(path+"."+name, ".")
		switch {
		case fd.IsList():
			l := m.Get(fd).List()
			for j := range l.Len() {
				v := scalarText(fd, l.Get(j))
				for _, c := range comment(field, l.Get(j).String()) {
					b.WriteString(indent + "# " + c + "\n")
				}
				b.WriteString(indent + name + ": " + v + "\n")
			}
		case fd.Message() != nil:
			if !m.Has(fd) {
				continue
			}
			var sub strings.Builder
			writeMinimal(&sub, indent+"  ", m.Get(fd).Message(), def.Get(fd).Message(), field, comment)
			if sub.Len() > 0 {
				b.WriteString(indent + name + " {\n" + sub.String() + indent + "}\n")
			}
		default:
			if def.Has(fd) && m.Get(fd).Equal(def.Get(fd)) {
				continue
			}
			b.WriteString(indent + name + ": " + scalarText(fd, m.Get(fd)) + "\n")
		}
	}
}

// scalarText renders a bool, uint64 or string value in text format.
func scalarText(fd protoreflect.FieldDescriptor, v protoreflect.Value) string {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return strconv.Quote(v.String())
	case protoreflect.BoolKind:
		return strconv.FormatBool(v.Bool())
	case protoreflect.Uint64Kind:
		return strconv.FormatUint(v.Uint(), 10)
	}
	// The policy schema has no other kind; a new one must be added here.
	return fmt.Sprintf("%v", v.Interface())
}

// SortUses orders uses by count, most frequent first, then by name.
func SortUses(uses []SyscallUse) {
	slices.SortFunc(uses, func(a, b SyscallUse) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), strings.Compare(a.Name, b.Name))
	})
}
