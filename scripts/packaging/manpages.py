#!/usr/bin/env python3
"""Man pages for dogestry and each of its commands, from the CLI's own description of itself.

  manpages.py DOGESTRY OUTDIR VERSION DATE

Runs `DOGESTRY --experimental-dump-help` (swift-argument-parser's JSON of every command, option
and help text) and writes OUTDIR/dogestry.1 and OUTDIR/dogestry-COMMAND.1 in man(7) roff, so the
pages say exactly what `--help` says. DATE (YYYY-MM-DD) makes the output reproducible.
"""
import json
import subprocess
import sys


def esc(text):
    """Escapes text for roff: backslashes, and a leading dot or quote on a line."""
    out = []
    for line in text.replace("\\", "\\e").split("\n"):
        if line.startswith((".", "'")):
            line = "\\&" + line
        out.append(line)
    return "\n".join(out)


def synopsis_arg(a):
    name = a.get("valueName") or ""
    pref = a.get("preferredName") or {}
    flag = ("--" if pref.get("kind") == "long" else "-") + pref.get("name", "") if pref else ""
    if a["kind"] == "positional":
        s = "<" + name + ">" + ("..." if a.get("isRepeating") else "")
    elif a["kind"] == "flag":
        s = flag
    else:
        s = flag + " <" + name + ">"
    return "[" + s + "]" if a.get("isOptional") else s


def option_label(a):
    names = []
    for n in a.get("names") or []:
        names.append(("--" if n["kind"] == "long" else "-") + n["name"])
    if a["kind"] == "positional":
        return "<" + (a.get("valueName") or "") + ">"
    label = ", ".join("\\fB" + esc(n) + "\\fR" for n in names)
    if a["kind"] == "option":
        label += " \\fI" + esc(a.get("valueName") or "value") + "\\fR"
    return label


def page(cmd, path, version, date, see_also):
    full = " ".join(path)
    title = "-".join(path).upper()
    args = [a for a in cmd.get("arguments", []) if a.get("shouldDisplay", True)]
    lines = [
        '.TH "%s" "1" "%s" "dogestry %s" "dogestry manual"' % (title, date, version),
        ".SH NAME",
        "%s \\- %s" % ("-".join(path), esc(cmd.get("abstract", ""))),
        ".SH SYNOPSIS",
        ".B %s" % full,
    ]
    subs = [s for s in cmd.get("subcommands", []) if s.get("shouldDisplay", True) and s["commandName"] != "help"]
    if subs:
        lines.append("\\fI<command>\\fR [\\fIoptions\\fR]")
    else:
        lines.append(esc(" ".join(synopsis_arg(a) for a in args)))
    lines += [".SH DESCRIPTION", esc(cmd.get("abstract", ""))]
    if cmd.get("discussion"):
        for para in cmd["discussion"].split("\n\n"):
            lines += [".PP", esc(para.strip())]
    if subs:
        lines.append(".SH COMMANDS")
        for s in subs:
            lines += [".TP", "\\fB%s\\fR" % s["commandName"], esc(s.get("abstract", "")) + " See \\fB%s\\fR(1)." % "-".join(path + [s["commandName"]])]
    if args:
        lines.append(".SH OPTIONS")
        for a in args:
            lines += [".TP", option_label(a), esc(a.get("abstract", "") or "")]
    lines += [".SH SEE ALSO", ", ".join("\\fB%s\\fR(1)" % p for p in see_also),
              ".PP", "README.md, docs/FORMAT.md and docs/SERVE.md in /usr/share/doc/dogestry (or the source tree)."]
    return "\n".join(lines) + "\n"


def main():
    dogestry, outdir, version, date = sys.argv[1:5]
    top = json.loads(subprocess.run([dogestry, "--experimental-dump-help"], check=True, capture_output=True).stdout)["command"]
    subs = [s for s in top.get("subcommands", []) if s.get("shouldDisplay", True) and s["commandName"] != "help"]
    names = ["dogestry"] + ["dogestry-" + s["commandName"] for s in subs]
    with open("%s/dogestry.1" % outdir, "w") as f:
        f.write(page(top, ["dogestry"], version, date, names[1:]))
    for s in subs:
        name = "dogestry-" + s["commandName"]
        with open("%s/%s.1" % (outdir, name), "w") as f:
            f.write(page(s, ["dogestry", s["commandName"]], version, date, [n for n in names if n != name]))
    print(" ".join(names))


if __name__ == "__main__":
    main()
