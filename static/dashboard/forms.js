// Choices that apply at once (language, filters): a <select data-autosubmit> submits its form when
// it changes. Delegated, so that fragments the server pushes later work too; no inline handlers, so
// the Content-Security-Policy needs no 'unsafe-inline' for scripts.
document.addEventListener("change", (event) => {
  if (event.target.matches("select[data-autosubmit]")) event.target.form.submit();
});
