import PPSample

/// Text for the rows of a sample grid.
public enum ClassNames {
    /// The row label of class `label`: "207 GOLDEN RETRIEVER" for a 1000-class (ImageNet) model, the
    /// number alone otherwise, "-" for the null class (label == numClasses). Names are the first ImageNet
    /// lemma, cut to `maxCharacters` in all (at a word boundary when there is one), written only with
    /// what the grid's 3x5 font draws (letters, digits, space, - . ,): other characters are dropped.
    public static func rowLabel(_ label: Int32, numClasses: Int, maxCharacters: Int = 20) -> String {
        if label == Int32(numClasses) { return "-" }
        let number = String(label)
        guard numClasses == ImageNetClasses.entries.count, label >= 0, Int(label) < numClasses else { return number }
        let lemma = ImageNetClasses.entries[Int(label)].lemma
        let first = lemma.split(separator: ",").first.map(String.init) ?? lemma
        let drawable = String(first.uppercased().filter { RowLabels.drawable($0) })
        let room = maxCharacters - number.count - 1
        guard room > 0 else { return number }
        var name = drawable
        if name.count > room {
            let cut = String(name.prefix(room))
            // Prefer whole words: drop a partial last word when an earlier space leaves enough of the name.
            if let space = cut.lastIndex(of: " "), cut.distance(from: cut.startIndex, to: space) >= room / 2 {
                name = String(cut[..<space])
            } else {
                name = cut
            }
        }
        return name.isEmpty ? number : number + " " + name
    }
}
