#!/bin/sh
# Regenerates the Office samples of this directory from the flat
# OpenDocument sources below, with LibreOffice run unsandboxed on these
# trusted inputs (soffice --convert-to). Run it from this directory and
# commit the outputs; README.md lists what each file is.
set -eu
command -v soffice >/dev/null || { echo "needs soffice: apt-get install libreoffice-core-nogui libreoffice-writer-nogui libreoffice-calc-nogui libreoffice-impress-nogui" >&2; exit 1; }
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT

ns='xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" xmlns:style="urn:oasis:names:tc:opendocument:xmlns:style:1.0" xmlns:fo="urn:oasis:names:tc:opendocument:xmlns:xsl-fo-compatible:1.0" xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0" xmlns:presentation="urn:oasis:names:tc:opendocument:xmlns:presentation:1.0" xmlns:svg="urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0" xmlns:xlink="http://www.w3.org/1999/xlink" xmlns:script="urn:oasis:names:tc:opendocument:xmlns:script:1.0" xmlns:ooo="http://openoffice.org/2004/office" xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:dom="http://www.w3.org/2001/xml-events" office:version="1.3"'

# Three pages of text, a page break before pages two and three.
cat > "$src/text.fodt" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<office:document $ns office:mimetype="application/vnd.oasis.opendocument.text">
<office:automatic-styles><style:style style:name="PB" style:family="paragraph"><style:paragraph-properties fo:break-before="page"/></style:style></office:automatic-styles>
<office:body><office:text>
<text:p>Sample document, page one.</text:p>
<text:p text:style-name="PB">Page two.</text:p>
<text:p text:style-name="PB">Page three.</text:p>
</office:text></office:body></office:document>
EOF

# Two sheets with a few cells each: one page per sheet.
cat > "$src/sheet.fods" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<office:document $ns office:mimetype="application/vnd.oasis.opendocument.spreadsheet">
<office:body><office:spreadsheet>
<table:table table:name="First"><table:table-row><table:table-cell office:value-type="string"><text:p>Sheet one</text:p></table:table-cell><table:table-cell office:value-type="float" office:value="42"><text:p>42</text:p></table:table-cell></table:table-row></table:table>
<table:table table:name="Second"><table:table-row><table:table-cell office:value-type="string"><text:p>Sheet two</text:p></table:table-cell></table:table-row></table:table>
</office:spreadsheet></office:body></office:document>
EOF

# Four slides with a text box each: one page per slide.
slides=""
for i in 1 2 3 4; do
	slides="$slides<draw:page draw:name=\"s$i\" draw:master-page-name=\"Default\"><draw:frame svg:x=\"2cm\" svg:y=\"2cm\" svg:width=\"20cm\" svg:height=\"3cm\"><draw:text-box><text:p>Slide $i</text:p></draw:text-box></draw:frame></draw:page>"
done
cat > "$src/slides.fodp" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<office:document $ns office:mimetype="application/vnd.oasis.opendocument.presentation">
<office:master-styles><style:master-page style:name="Default"/></office:master-styles>
<office:body><office:presentation>$slides</office:presentation></office:body></office:document>
EOF

# One page whose Basic macro, bound to the document's load event, would
# append "MACRO RAN" to the text if it ever ran.
cat > "$src/macro.fodt" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<office:document $ns office:mimetype="application/vnd.oasis.opendocument.text">
<office:scripts>
<office:script script:language="ooo:Basic"><ooo:libraries><ooo:library-embedded ooo:name="Standard"><ooo:module ooo:name="Module1"><ooo:source-code>Sub OnLoad(event)
  event.Source.Text.insertString(event.Source.Text.getEnd(), " MACRO RAN", False)
End Sub
</ooo:source-code></ooo:module></ooo:library-embedded></ooo:libraries></office:script>
<office:event-listeners><script:event-listener script:language="ooo:script" script:event-name="dom:load" xlink:href="vnd.sun.star.script:Standard.Module1.OnLoad?language=Basic&amp;location=document"/></office:event-listeners>
</office:scripts>
<office:body><office:text><text:p>A document with a macro.</text:p></office:text></office:body></office:document>
EOF

# One page with an image linked, not embedded, from a web address; the
# test replaces LINK_TARGET with the address of a listener of its own.
cat > "$src/link.fodt" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<office:document $ns office:mimetype="application/vnd.oasis.opendocument.text">
<office:body><office:text><text:p>A document with a linked image.<draw:frame draw:name="img" text:anchor-type="as-char" svg:width="2cm" svg:height="2cm"><draw:image xlink:href="http://127.0.0.1:9/LINK_TARGET.png" xlink:type="simple" xlink:show="embed" xlink:actuate="onLoad"/></draw:frame></text:p></office:text></office:body></office:document>
EOF

out=$(pwd)
conv() { # conv SRC FORMAT NAME
	soffice --headless --norestore --convert-to "$2" --outdir "$src/out" "$src/$1" >/dev/null
	mv "$src/out/${1%.*}.${2%%:*}" "$out/$3"
}
conv text.fodt odt text.odt
conv text.fodt docx text.docx
conv sheet.fods xlsx sheet.xlsx
conv slides.fodp pptx slides.pptx
conv macro.fodt odt macro.odt
conv link.fodt docx link.docx
