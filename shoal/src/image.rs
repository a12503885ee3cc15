//! `shoal image load|ls`: a node's image store from the command line, as
//! `ctr images import` and `crictl images` are on a containerd node. There
//! is no registry: images arrive as `docker save` or OCI-layout archives.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use shoal_agent::image::{list_rows, ImageStore, DEFAULT_AGENT_DATA_DIR};

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Import the images of a `docker save` or OCI-layout archive (plain
    /// or gzip) into the node's image store.
    Load(LoadArgs),
    /// List the node's images (columns as `crictl images`).
    Ls(LsArgs),
}

#[derive(Args)]
pub struct LoadArgs {
    /// The archive (`docker save -o`, `scripts/busybox-image.sh`, an OCI
    /// image layout as a tar).
    file: PathBuf,
    /// The node agent's data dir (images are kept in its `images/`).
    #[arg(long, env = "SHOAL_AGENT_DATA_DIR", default_value = DEFAULT_AGENT_DATA_DIR)]
    data_dir: PathBuf,
}

#[derive(Args)]
pub struct LsArgs {
    /// The node agent's data dir (images are kept in its `images/`).
    #[arg(long, env = "SHOAL_AGENT_DATA_DIR", default_value = DEFAULT_AGENT_DATA_DIR)]
    data_dir: PathBuf,
}

pub fn run(command: ImageCommand) -> anyhow::Result<()> {
    match command {
        ImageCommand::Load(args) => {
            let store = ImageStore::open(&args.data_dir).with_context(|| {
                format!("opening the image store in {}", args.data_dir.display())
            })?;
            for image in store.import(&args.file)? {
                if image.names.is_empty() {
                    println!("Loaded image ID: {}", image.id);
                }
                for name in &image.names {
                    println!("Loaded image: {name}");
                }
            }
        }
        ImageCommand::Ls(args) => {
            let store = ImageStore::open(&args.data_dir).with_context(|| {
                format!("opening the image store in {}", args.data_dir.display())
            })?;
            print!("{}", table(&list_rows(&store.list()?)));
        }
    }
    Ok(())
}

/// crictl's table: tabwriter with a minimum cell width of 20 and 3 spaces
/// of padding, no padding after the last column.
fn table(rows: &[[String; 4]]) -> String {
    let header = ["IMAGE", "TAG", "IMAGE ID", "SIZE"].map(String::from);
    let all: Vec<&[String; 4]> = std::iter::once(&header).chain(rows).collect();
    let widths: Vec<usize> = (0..3)
        .map(|c| {
            all.iter()
                .map(|r| r[c].chars().count() + 3)
                .max()
                .unwrap_or(0)
                .max(20)
        })
        .collect();
    let mut out = String::new();
    for row in all {
        for (c, width) in widths.iter().enumerate() {
            out.push_str(&format!("{:<width$}", row[c]));
        }
        out.push_str(&row[3]);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_as_crictl() {
        let rows = vec![[
            "docker.io/library/busybox".to_string(),
            "latest".to_string(),
            "8c811b4aec35f".to_string(),
            "1.36MB".to_string(),
        ]];
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "IMAGE                       TAG                 IMAGE ID            SIZE"
        );
        assert_eq!(
            lines[1],
            "docker.io/library/busybox   latest              8c811b4aec35f       1.36MB"
        );
    }
}
