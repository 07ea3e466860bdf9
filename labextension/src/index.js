// SQL highlighting of mlnb's %%mlsql cells in JupyterLab 4 and Notebook 7.
//
// Every CodeMirror editor gets a language compartment that is empty (the editor keeps the
// language JupyterLab gave it) until its text starts with %%mlsql; then it holds DuckDB's SQL
// (PostgreSQL's grammar with DuckDB's and mlnb's words), at a higher precedence than the
// notebook's Python, so JupyterLab's own highlight style colours the SQL tokens.
// Built by labextension/build.sh into mlnb/labextension (shipped in the wheel).
import { EditorExtensionRegistry, IEditorExtensionRegistry } from '@jupyterlab/codemirror';
import { Compartment, EditorState, Prec } from '@codemirror/state';
import { PostgreSQL, SQLDialect, sql } from '@codemirror/lang-sql';

const MAGIC = /^\s*%%mlsql(\s|$)/;

const DUCKDB_KEYWORDS =
  'anti asof attach columns describe detach exclude glob ilike install load macro pivot pivot_longer ' +
  'pivot_wider positional pragma qualify replace sample semi struct_pack summarize unpivot using';
const MLNB_KEYWORDS = 'classifier classifiers evaluate excluding functions';
const DUCKDB_TYPES =
  'hugeint uhugeint ubigint uinteger usmallint utinyint tinyint varchar blob list map struct union enum ' +
  'timestamp_s timestamp_ms timestamp_ns double float';
const MLNB_BUILTINS = 'embed imagenet_labels read_images';

export const duckdbDialect = SQLDialect.define({
  ...PostgreSQL.spec,
  keywords: `${PostgreSQL.spec.keywords} ${DUCKDB_KEYWORDS} ${MLNB_KEYWORDS}`,
  types: `${PostgreSQL.spec.types} ${DUCKDB_TYPES}`,
  builtin: `${PostgreSQL.spec.builtin || ''} ${MLNB_BUILTINS}`.trim(),
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
          return EditorExtensionRegistry.createImmutableExtension(mlsqlLanguage(text));
        }
      })
    );
  }
};

export default plugin;
