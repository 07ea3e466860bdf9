// SQL highlighting of mlnb's %%mlsql cells in JupyterLab 4 and Notebook 7.
//
// Every CodeMirror editor gets a language compartment that is empty (the editor keeps the
// language JupyterLab gave it) until its text starts with %%mlsql; then it holds DuckDB's SQL
// (PostgreSQL's grammar with DuckDB's and mlnb's words), at a higher precedence than the
// notebook's Python, so JupyterLab's own highlight style colours the SQL tokens. In other cells,
// the SQL after a `%mlsql` line magic is parsed on its own and marked with classes coloured by
// JupyterLab's editor colour variables.
// Built by labextension/build.sh into mlnb/labextension (shipped in the wheel).
import { EditorExtensionRegistry, IEditorExtensionRegistry } from '@jupyterlab/codemirror';
import { Compartment, EditorState, Prec, RangeSetBuilder } from '@codemirror/state';
import { Decoration, EditorView, ViewPlugin } from '@codemirror/view';
import { highlightTree, tagHighlighter, tags } from '@lezer/highlight';
import { PostgreSQL, SQLDialect, sql } from '@codemirror/lang-sql';
import { BUILTINS, KEYWORDS, TYPES } from './keywords.js';

const MAGIC = /^\s*%%mlsql(\s|$)/;

export const duckdbDialect = SQLDialect.define({
  ...PostgreSQL.spec,
  // DuckDB's own words (src/keywords.js is generated from DuckDB and mlnb's statements by keywords.py)
  keywords: KEYWORDS,
  types: TYPES,
  builtin: BUILTINS,
  specialVar: '$', // $name: a bound Python variable
  caseInsensitiveIdentifiers: true
});

const sqlSupport = sql({ dialect: duckdbDialect, upperCaseKeywords: true });

export function isMlsqlCell(text) {
  return MAGIC.test(text.slice(0, 200));
}

function mlsqlLanguage(initialText) {
  const language = new Compartment();
  const wanted = isSql => (isSql ? Prec.high(sqlSupport) : []);
  // Reconfigure only when a change turns a cell into a %%mlsql cell or back.
  const follow = EditorState.transactionExtender.of(tr => {
    if (!tr.docChanged) {
      return null;
    }
    const was = isMlsqlCell(tr.startState.doc.sliceString(0, 200));
    const now = isMlsqlCell(tr.newDoc.sliceString(0, 200));
    return was === now ? null : { effects: language.reconfigure(wanted(now)) };
  });
  return [language.of(wanted(isMlsqlCell(initialText || ''))), follow];
}

// -- %mlsql line magics inside Python cells ----------------------------------------------
const LINE_MAGIC = /(?<![%\w])%mlsql((?:\s+(?:-o|--out)\s+[A-Za-z_]\w*|\s+--lazy)*)\s+(\S.*)$/;

const lineClasses = tagHighlighter([
  { tag: tags.keyword, class: 'mlnb-sql-keyword' },
  { tag: [tags.typeName, tags.standard(tags.name)], class: 'mlnb-sql-builtin' },
  { tag: [tags.string, tags.special(tags.string)], class: 'mlnb-sql-string' },
  { tag: [tags.number, tags.bool, tags.null], class: 'mlnb-sql-number' },
  { tag: [tags.lineComment, tags.blockComment], class: 'mlnb-sql-comment' },
  { tag: tags.operator, class: 'mlnb-sql-operator' },
  { tag: tags.special(tags.name), class: 'mlnb-sql-param' },
  { tag: tags.name, class: 'mlnb-sql-name' }
]);

const marks = {};
function mark(cls) {
  return marks[cls] || (marks[cls] = Decoration.mark({ class: cls }));
}

function lineMagicDecorations(view) {
  const builder = new RangeSetBuilder();
  const doc = view.state.doc;
  if (isMlsqlCell(doc.sliceString(0, 200))) {
    return builder.finish();
  }
  for (const { from, to } of view.visibleRanges) {
    for (let pos = from; pos <= to; ) {
      const line = doc.lineAt(pos);
      const m = LINE_MAGIC.exec(line.text);
      if (m) {
        const offset = line.from + m.index + m[0].length - m[2].length;
        const tree = duckdbDialect.language.parser.parse(m[2]);
        highlightTree(tree, lineClasses, (a, b, cls) => builder.add(offset + a, offset + b, mark(cls)));
      }
      pos = line.to + 1;
    }
  }
  return builder.finish();
}

const lineMagics = ViewPlugin.fromClass(
  class {
    constructor(view) {
      this.decorations = lineMagicDecorations(view);
    }
    update(update) {
      if (update.docChanged || update.viewportChanged) {
        this.decorations = lineMagicDecorations(update.view);
      }
    }
  },
  { decorations: v => v.decorations }
);

// JupyterLab's own colours; `*` so they also win over the Python highlighting of the same text.
const colour = v => ({ color: `var(${v})` });
const lineTheme = EditorView.baseTheme({
  '.mlnb-sql-keyword, .mlnb-sql-keyword *': { ...colour('--jp-mirror-editor-keyword-color'), fontWeight: 'bold' },
  '.mlnb-sql-builtin, .mlnb-sql-builtin *': colour('--jp-mirror-editor-builtin-color'),
  '.mlnb-sql-string, .mlnb-sql-string *': colour('--jp-mirror-editor-string-color'),
  '.mlnb-sql-number, .mlnb-sql-number *': colour('--jp-mirror-editor-number-color'),
  '.mlnb-sql-comment, .mlnb-sql-comment *': { ...colour('--jp-mirror-editor-comment-color'), fontStyle: 'italic' },
  '.mlnb-sql-operator, .mlnb-sql-operator *': colour('--jp-mirror-editor-operator-color'),
  '.mlnb-sql-param, .mlnb-sql-param *': colour('--jp-mirror-editor-variable-2-color'),
  '.mlnb-sql-name, .mlnb-sql-name *': { ...colour('--jp-mirror-editor-variable-color'), fontWeight: 'normal' }
});

const plugin = {
  id: 'mlnb-sql:highlight',
  description: 'SQL highlighting of %%mlsql cells',
  autoStart: true,
  requires: [IEditorExtensionRegistry],
  activate: (app, extensions) => {
    extensions.addExtension(
      Object.freeze({
        name: 'mlnb-sql:highlight',
        default: true,
        factory: options => {
          let text = '';
          try {
            text = options.model.sharedModel.getSource();
          } catch (e) {
            text = '';
          }
          return EditorExtensionRegistry.createImmutableExtension([mlsqlLanguage(text), lineMagics, lineTheme]);
        }
      })
    );
  }
};

export default plugin;
