/**
 * The top-level members of a JSON object in the order they appear, duplicates included, keys
 * decoded: what a parser that keeps the first key (gjson, which llama-swap uses) and one that
 * keeps the last (`JSON.parse`) would each read. A plain recursive reader, written apart from
 * the gateway's scanner so that it can judge it. Input must be valid JSON (check with JSON.parse).
 */
export function topLevelMembers(text: string): Array<[string, unknown]> {
  let i = 0;
  const ws = () => {
    while (i < text.length && ' \t\n\r'.includes(text[i]!)) i++;
  };
  const string = (): string => {
    const start = i;
    i++;
    while (text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
    i++;
    return JSON.parse(text.slice(start, i)) as string;
  };
  const skipValue = (): void => {
    ws();
    const c = text[i];
    if (c === '"') return void string();
    if (c === '{' || c === '[') {
      const close = c === '{' ? '}' : ']';
      i++;
      ws();
      if (text[i] === close) return void i++;
      for (;;) {
        if (c === '{') {
          ws();
          string();
          ws();
          i++; // colon
        }
        skipValue();
        ws();
        if (text[i++] === close) return;
      }
    }
    while (i < text.length && !',}] \t\n\r'.includes(text[i]!)) i++;
  };
  ws();
  if (text[i] !== '{') return [];
  i++;
  const members: Array<[string, unknown]> = [];
  ws();
  if (text[i] === '}') return members;
  for (;;) {
    ws();
    const key = string();
    ws();
    i++;
    ws();
    const start = i;
    skipValue();
    members.push([key, JSON.parse(text.slice(start, i)) as unknown]);
    ws();
    if (text[i++] === '}') return members;
  }
}
